"""Run execnet's own test suite against ``asyncgw.sync``.

``nox -s execnet_suite`` downloads execnet's sdist and calls this with it.
We unpack it, put a package named ``execnet`` first on the path whose
``__init__`` is asyncgw's alias (``asyncgw.compat.install()``:
``import execnet`` gives :mod:`asyncgw.sync`; see ``execnet_shim``), and run the six test files
of execnet's ``testing/`` that exercise its public API, over popen,
``popen//via=`` (execnet's "proxy" gateway) and, where OpenSSH's sshd
exists, ssh to a real sshd on loopback (a throw-away ``HOME`` holds the
``~/.ssh/config`` entry execnet's ``--gx ssh=`` fixture names).

Prints the counts and every failure with its reason; exits non-zero if
fewer than ``--min-passed`` tests passed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

TEST_FILES = [
    "test_channel.py",
    "test_gateway.py",
    "test_multi.py",
    "test_xspec.py",
    "test_rsync.py",
    "test_termination.py",
]
SHIM = Path(__file__).parent / "execnet_shim"
SSH_ALIAS = "asyncgw-sshd"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _sshd(home: Path) -> Iterator[bool]:
    """A loopback sshd and a ``~/.ssh/config`` naming it ``asyncgw-sshd``
    (yields False, starting nothing, where sshd cannot run here)."""
    from tests.realsshd import SSHD
    from tests.sshserver import Keys

    if not os.path.exists(SSHD) or os.geteuid() != 0:
        yield False
        return
    from tests.realsshd import run_sshd

    keys_dir = home / "keys"
    keys_dir.mkdir()
    keys = Keys.generate(keys_dir)
    port = _free_port()
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "known_hosts").write_text(keys.known_hosts(port).read_text())
    (ssh / "config").write_text(
        f"Host {SSH_ALIAS}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
        f"  IdentityFile {keys.user_key_path}\n"
        f"  UserKnownHostsFile {ssh / 'known_hosts'}\n"
    )
    # OpenSSH's client (execnet runs it) reads the passwd entry's home, not
    # $HOME: an `ssh` first on PATH points it at the same config.
    bin_dir = home / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh") or "ssh"} -F {ssh / "config"} "$@"\n')
    wrapper.chmod(0o755)
    sshd_dir = home / "sshd"
    sshd_dir.mkdir()
    with run_sshd(keys, sshd_dir, "127.0.0.1", port):
        yield True


def _report(junit: Path) -> tuple[dict[str, int], list[str]]:
    counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    problems = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "failed" if child.tag == "failure" else child.tag
                if outcome != "skipped":
                    message = (child.get("message") or "").strip().splitlines()
                    problems.append(
                        f"{outcome.upper():7} {name}: {message[0][:300] if message else ''}"
                    )
                break
        counts[outcome] += 1
    return counts, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sdist", type=Path, help="execnet's sdist (.tar.gz)")
    parser.add_argument("--min-passed", type=int, default=200)
    parser.add_argument("--files", nargs="+", default=TEST_FILES, help="of testing/")
    parser.add_argument(
        "--execnet", action="store_true", help="run execnet itself instead (the peer, beside us)"
    )
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="execnet-suite-") as tmp:
        root = Path(tmp)
        with tarfile.open(args.sdist) as archive:
            archive.extractall(root, filter="data")
        (source,) = root.glob("execnet-*")
        home = root / "home"
        home.mkdir()
        junit = root / "junit.xml"
        with _sshd(home) as have_sshd:
            gx = ["--gx", f"ssh={SSH_ALIAS}"] if have_sshd else []
            env = {
                **os.environ,
                # Without the shim the tests import execnet itself.
                "PYTHONPATH": os.pathsep.join(
                    ([] if args.execnet else [str(SHIM)]) + [str(Path.cwd())]
                ),
                "HOME": str(home),
                "PATH": os.pathsep.join([str(home / "bin"), os.environ.get("PATH", "")]),
            }
            command = [
                sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                "-o", "timeout=60", f"--junitxml={junit}", *gx,
                *[f"testing/{name}" for name in args.files], *args.pytest_args,
            ]  # fmt: skip
            print("+", " ".join(command), flush=True)
            subprocess.run(command, cwd=source, env=env, check=False)
        counts, problems = _report(junit)
    subject = "execnet itself" if args.execnet else "asyncgw.sync"
    print(f"\nexecnet's suite on {subject}:", ", ".join(f"{n} {k}" for k, n in counts.items()))
    if not have_sshd:
        print("(no sshd here: the ssh-parametrized tests were skipped)")
    for line in problems:
        print("  " + line)
    if counts["passed"] < args.min_passed:
        print(f"fewer than {args.min_passed} passed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
