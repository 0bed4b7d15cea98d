"""Run OpenSSH's sshd for end-to-end tests: generated keys, a config of our
own, default MaxSessions and MaxStartups, optionally inside a network
namespace."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .sshserver import Keys

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def require_sshd() -> None:
    """Skip without sshd, except where ASYNCGW_REQUIRE_SSHD is set (CI): fail."""
    if not os.path.exists(SSHD):
        if os.environ.get("ASYNCGW_REQUIRE_SSHD"):
            pytest.fail(f"sshd is required here but {SSHD} does not exist")
        pytest.skip("OpenSSH sshd is not installed")


def _listening(address: str, port: int) -> bool:
    """Whether sshd accepts connections (a namespace's address is routed
    from here through its veth pair)."""
    try:
        socket.create_connection((address, port), timeout=1).close()
    except OSError:
        return False
    return True


def write_sshd_config(
    keys: Keys, directory: Path, address: str, port: int, extra_config: str = ""
) -> Path:
    """An sshd_config (and authorized_keys) in ``directory`` for sshd on
    ``address:port``; ``extra_config`` is appended as it is."""
    authorized = directory / "authorized_keys"
    authorized.write_text((keys.directory / "id_user.pub").read_text())
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress {address}\n"
        f"HostKey {keys.directory / 'host_key'}\nPidFile {directory / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin yes\nStrictModes no\n"
        f"UsePAM no\nLogLevel VERBOSE\nSubsystem sftp internal-sftp\n{extra_config}"
    )
    return config


def spawn_sshd(config: Path, log: Path, netns: str | None = None) -> subprocess.Popen[bytes]:
    """Start ``sshd -D`` on ``config`` (in ``netns``, if given), its output to
    ``log``, in a session of its own; does not wait for it to listen."""
    os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory
    # ip netns exec execs sshd: the Popen is sshd itself.
    prefix = ["ip", "netns", "exec", netns] if netns else []
    with log.open("w") as log_file:
        return subprocess.Popen(
            [*prefix, SSHD, "-D", "-e", "-f", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_sshd(server: subprocess.Popen[bytes]) -> None:
    """Terminate sshd (kill it after 10 s) and wait for it."""
    if server.poll() is None:
        server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@contextlib.contextmanager
def run_sshd(
    keys: Keys,
    directory: Path,
    address: str,
    port: int,
    netns: str | None = None,
    extra_config: str = "",
) -> Iterator[Path]:
    """sshd listening on ``address:port``; yields its log file.
    ``extra_config`` is more sshd_config text (``"MaxStartups 10:30:100\\n"``)."""
    config = write_sshd_config(keys, directory, address, port, extra_config)
    log = directory / "sshd.log"
    server = spawn_sshd(config, log, netns)
    try:
        deadline = time.monotonic() + 15
        while not _listening(address, port):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield log
    finally:
        stop_sshd(server)
