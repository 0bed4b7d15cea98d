"""``import asyncgw`` keeps asyncssh's import quiet under cryptography 51+,
which deprecates the DSA names asyncssh reads when imported (a warning on
every run of the command line; an error under ``-W error``)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import warnings
import asyncgw
# As cryptography 51 raises it, attributed to asyncssh's module:
warnings.warn_explicit(
    "DSA is deprecated and support will be removed in a future release.",
    UserWarning, "misc.py", 32, module="asyncssh.crypto.misc",
)
print("quiet")
# Anyone else's warning of that text still surfaces:
warnings.warn_explicit("DSA is deprecated", UserWarning, "mine.py", 1, module="mine")
"""


def test_asyncssh_dsa_deprecation_is_ignored_and_nothing_else() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", CHECK],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout == "quiet\n"
    assert result.returncode == 1
    assert "UserWarning: DSA is deprecated" in result.stderr


def test_a_fresh_interpreter_imports_asyncssh_through_asyncgw_quietly() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import asyncgw.transports.sshpool"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
