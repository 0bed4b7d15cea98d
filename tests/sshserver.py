"""An in-process SSH server (asyncssh) for fast ssh-transport tests.

It authenticates with a generated user key, runs each exec request's
command under ``/bin/sh -c`` as a local child and pumps its streams
explicitly; it counts connections and sessions so tests can check sharing.
It has no SFTP subsystem unless given one (``sftp_factory``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh


@dataclass
class Keys:
    """Generated once per test session: a host key, a user key, known_hosts."""

    directory: Path
    host_key: asyncssh.SSHKey
    user_key_path: Path

    @classmethod
    def generate(cls, directory: Path) -> Keys:
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        user_key = asyncssh.generate_private_key("ssh-ed25519")
        user_key_path = directory / "id_user"
        user_key.write_private_key(str(user_key_path))
        user_key.write_public_key(str(directory / "id_user.pub"))
        host_key.write_private_key(str(directory / "host_key"))
        for private in (user_key_path, directory / "host_key"):
            private.chmod(0o600)  # sshd and ssh refuse keys others can read
        host_key.write_public_key(str(directory / "host_key.pub"))
        return cls(directory, host_key, user_key_path)

    @staticmethod
    def generate_public() -> str:
        """A public key nobody holds, for known_hosts that must not match."""
        return asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()

    def known_hosts(self, port: int, name: str = "known_hosts") -> Path:
        path = self.directory / f"{name}-{port}"
        public = self.host_key.export_public_key().decode().strip()
        path.write_text(f"[127.0.0.1]:{port} {public}\n")
        return path


@dataclass
class Stats:
    connections: int = 0
    sessions: int = 0
    children: list[asyncio.subprocess.Process] = field(default_factory=list)


class _Server(asyncssh.SSHServer):
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.stats.connections += 1

    def connection_requested(self, dest_host: str, dest_port: int, *_: object) -> bool:
        # Jump-host use: allow forwarding, to loopback only.
        return dest_host in ("127.0.0.1", "localhost")


async def _pump(source: asyncio.StreamReader | asyncssh.SSHReader[bytes], sink: object) -> None:
    with contextlib.suppress(Exception):
        while data := await source.read(65536):
            sink.write(data)  # type: ignore[attr-defined]
            await sink.drain()  # type: ignore[attr-defined]


async def _run(stats: Stats, process: asyncssh.SSHServerProcess[bytes]) -> None:
    stats.sessions += 1
    child = await asyncio.create_subprocess_shell(
        process.command or "true",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    stats.children.append(child)
    assert child.stdin and child.stdout and child.stderr

    async def feed() -> None:
        await _pump(process.stdin, child.stdin)
        with contextlib.suppress(Exception):
            child.stdin.close()  # type: ignore[union-attr]

    feeder = asyncio.create_task(feed())
    await asyncio.gather(_pump(child.stdout, process.stdout), _pump(child.stderr, process.stderr))
    status = await child.wait()
    feeder.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await feeder
    process.exit(status)


@contextlib.asynccontextmanager
async def ssh_server(
    keys: Keys, sftp_factory: type[asyncssh.SFTPServer] | None = None
) -> AsyncIterator[tuple[int, Stats]]:
    """A listening server on a free loopback port: ``(port, stats)``.

    :param sftp_factory: an SFTP subsystem to serve; by default there is
        none (a session asking for one fails, as on a host whose sshd has
        no ``Subsystem sftp``).
    """
    stats = Stats()
    server = await asyncssh.create_server(
        lambda: _Server(stats),
        "127.0.0.1",
        0,
        server_host_keys=[keys.host_key],
        authorized_client_keys=str(keys.directory / "id_user.pub"),
        process_factory=lambda process: _run(stats, process),
        sftp_factory=sftp_factory,
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, stats
    finally:
        server.close()
        await server.wait_closed()
        for child in stats.children:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    import os

                    os.killpg(child.pid, signal.SIGKILL)
                await child.wait()
