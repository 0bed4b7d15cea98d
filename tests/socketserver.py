"""Start an asyncgw socket server as a real subprocess, for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SECRET = "test-secret-0123456789abcdef"


@dataclass
class Server:
    process: subprocess.Popen[str]
    address: str
    secret_file: Path

    def spec(self) -> str:
        return f"socket={self.address}//socket_secret_file={self.secret_file}"


@contextlib.contextmanager
def socket_server(directory: Path, *args: str) -> Iterator[Server]:
    secret_file = directory / "secret"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o600)
    process = subprocess.Popen(
        [sys.executable, "-m", "asyncgw", "serve", "--port", "0", "--secret-file", str(secret_file),
         *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=dict(os.environ, PYTHONWARNINGS="error"),
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on "), line + (
            process.stderr.read() if process.stderr else ""
        )
        yield Server(process, line.split()[-1], secret_file)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the server and its workers
        process.communicate()
