"""Start an asyncgw socket server as a real subprocess, for tests.

The server runs ``python -m asyncgw serve`` with its certificate and key in
the test's directory (made on first start) and its log in a file there, so
that no pipe it writes to can fill and stall it."""

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
#: What a spec adds to reach a ``--plaintext`` server.
PLAINTEXT_KEY = "//socket_plaintext"


@dataclass
class Server:
    process: subprocess.Popen[str]
    address: str
    secret_file: Path
    #: ``SHA256:...`` as the server printed it; "" in plaintext.
    fingerprint: str
    log: Path

    def spec(self) -> str:
        """A spec that reaches this server, its fingerprint pinned."""
        pin = f"//socket_fingerprint={self.fingerprint}" if self.fingerprint else PLAINTEXT_KEY
        return f"socket={self.address}//socket_secret_file={self.secret_file}{pin}"

    def log_text(self) -> str:
        return self.log.read_text()


@contextlib.contextmanager
def socket_server(directory: Path, *args: str) -> Iterator[Server]:
    secret_file = directory / "secret"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o600)
    log = directory / "server.log"
    tls = (
        []
        if "--plaintext" in args
        else ["--cert", str(directory / "cert.pem"), "--key", str(directory / "key.pem")]
    )
    with open(log, "w") as log_stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "asyncgw", "serve", "--port", "0",
             "--secret-file", str(secret_file), *tls, *args],
            stdout=subprocess.PIPE,
            stderr=log_stream,
            text=True,
            start_new_session=True,
            env=dict(os.environ, PYTHONWARNINGS="error"),
        )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on "), line + log.read_text()
        second = process.stdout.readline().split()
        fingerprint = second[1] if second[:1] == ["fingerprint"] else ""
        yield Server(process, line.split()[-1], secret_file, fingerprint, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the server and its workers
        process.communicate()
