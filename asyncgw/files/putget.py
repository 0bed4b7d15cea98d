"""Copies of files and trees to and from many hosts (the fleet's ``Put``
and ``Get``), ``scp -r`` style: see :mod:`asyncgw.remote.files` for the
layout rules, which both sides share.

A put reads each source once, whatever the number of hosts: a
:class:`Broadcast` walks the sources and reads each block once, and hands
it to every host's :class:`Sink` — SFTP on the host's shared SSH
connection (:class:`SftpSink`), a gateway channel to
:mod:`asyncgw.remote.files` (:class:`GatewaySink`), or this machine's
disk (:class:`LocalSink`). The slowest host paces the reading, so memory
stays a few blocks, not a file per host. A host that fails drops out;
the others go on.

A get copies from each host with SFTP, through its gateway, or from this
machine, into a local directory.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncssh

from ..remote import files as _remote
from ..remote.files import BLOCK, place, prepare, scan

if TYPE_CHECKING:
    from .._channel import Channel
    from .._gateway import Gateway
    from ..transports.sshpool import Slot

__all__ = [
    "Broadcast",
    "GatewaySink",
    "LocalSink",
    "SftpSink",
    "Sink",
    "get_local",
    "get_sftp",
    "get_through_gateway",
]

#: An entry of :func:`asyncgw.remote.files.scan`.
Entry = tuple[Any, ...]

#: SFTP writes in flight per host (each up to a block, itself split by
#: asyncssh into parallel requests).
_WRITES_IN_FLIGHT = 2


class Sink:
    """Where one host's copy of a put goes; one call at a time."""

    def __init__(self, destination: str, create_dirs: bool, sources: int) -> None:
        self.destination = destination
        self.create_dirs = create_dirs
        self.sources = sources
        self.written = 0

    async def open(self) -> None:
        """Connect and check the destination (see :func:`prepare`)."""

    async def directory(self, entry: Entry) -> None:
        raise NotImplementedError

    async def begin_file(self, entry: Entry) -> None:
        raise NotImplementedError

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def end_file(self, entry: Entry) -> None:
        raise NotImplementedError

    async def finish(self) -> None:
        """Everything was sent: complete the copy (directory modes and times)."""

    def close(self) -> None:
        """Let go of connections and channels (also after a failure)."""


class LocalSink(Sink):
    """Writes to this machine (put to ``localhost``, and gets)."""

    async def open(self) -> None:
        self._into = prepare(self.destination, self.create_dirs, self.sources)
        self._dirs: list[tuple[str, int, float]] = []
        self._file: Any = None

    async def directory(self, entry: Entry) -> None:
        path = place(self.destination, self._into, entry[1])
        os.makedirs(path, exist_ok=True)
        self._dirs.append((path, entry[2], entry[3]))

    async def begin_file(self, entry: Entry) -> None:
        self._path = place(self.destination, self._into, entry[1])
        self._file = await asyncio.to_thread(open, self._path, "wb")

    async def write(self, data: bytes) -> None:
        self._file.write(data)
        self.written += len(data)

    async def end_file(self, entry: Entry) -> None:
        self._file.close()
        self._file = None
        os.chmod(self._path, entry[2])
        os.utime(self._path, (entry[3], entry[3]))

    async def finish(self) -> None:
        for path, mode, mtime in reversed(self._dirs):
            os.chmod(path, mode | 0o700)
            os.utime(path, (mtime, mtime))

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()


class SftpSink(Sink):
    """Writes over SFTP, on a session of the host's shared connection."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Slot]],
        destination: str,
        create_dirs: bool,
        sources: int,
    ) -> None:
        super().__init__(destination, create_dirs, sources)
        self._connect = connect
        self._slot: Slot | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._file: asyncssh.SFTPClientFile | None = None
        self._writes: list[asyncio.Task[int]] = []
        self._offset = 0
        self._dirs: list[tuple[str, int, float]] = []

    async def open(self) -> None:
        self._slot = await self._connect()
        self._sftp = sftp = await self._slot.conn.start_sftp_client()
        if self.create_dirs:
            await sftp.makedirs(self.destination, exist_ok=True)
        self._into = await sftp.isdir(self.destination)
        if not self._into and self.sources > 1:
            raise NotADirectoryError(
                f"{self.destination} is not a directory (for {self.sources} sources)"
            )

    def _place(self, rel: str) -> str:
        parts = rel.split("/")
        return posixpath.join(self.destination, *(parts if self._into else parts[1:]))

    async def directory(self, entry: Entry) -> None:
        assert self._sftp is not None
        path = self._place(entry[1])
        await self._sftp.makedirs(path, exist_ok=True)
        self._dirs.append((path, entry[2], entry[3]))

    async def begin_file(self, entry: Entry) -> None:
        assert self._sftp is not None
        self._path = self._place(entry[1])
        self._file = await self._sftp.open(self._path, "wb")
        self._offset = 0

    async def write(self, data: bytes) -> None:
        assert self._file is not None
        if len(self._writes) >= _WRITES_IN_FLIGHT:
            await self._writes.pop(0)
        task = asyncio.get_running_loop().create_task(self._file.write(data, self._offset))
        self._writes.append(task)
        self._offset += len(data)
        self.written += len(data)

    async def end_file(self, entry: Entry) -> None:
        assert self._sftp is not None and self._file is not None
        writes, self._writes = self._writes, []
        await asyncio.gather(*writes)
        await self._file.close()
        self._file = None
        await self._sftp.chmod(self._path, entry[2])
        await self._sftp.utime(self._path, (entry[3], entry[3]))

    async def finish(self) -> None:
        assert self._sftp is not None
        for path, mode, mtime in reversed(self._dirs):
            await self._sftp.chmod(path, mode | 0o700)
            await self._sftp.utime(path, (mtime, mtime))

    def close(self) -> None:
        for task in self._writes:
            task.cancel()
        if self._sftp is not None:
            self._sftp.exit()
        if self._slot is not None:
            self._slot.release()
            self._slot = None


class GatewaySink(Sink):
    """Writes through a gateway: :mod:`asyncgw.remote.files` receives."""

    def __init__(self, gateway: Gateway, destination: str, create_dirs: bool, sources: int):
        super().__init__(destination, create_dirs, sources)
        self._gateway = gateway
        self._channel: Channel | None = None

    async def open(self) -> None:
        self._channel = self._gateway.remote_exec(_remote)
        await self._send(("put", self.destination, self.create_dirs, self.sources))

    async def _send(self, item: object) -> None:
        assert self._channel is not None
        try:
            await self._channel.send(item)
        except Exception:
            await self._reply()  # the far side stopped: its reason, if it gave one
            raise

    async def _reply(self) -> None:
        assert self._channel is not None
        kind, text = await self._channel.receive()
        if kind == "error":
            raise OSError(f"on {self._gateway.id}: {text}")

    async def directory(self, entry: Entry) -> None:
        await self._send(entry)

    async def begin_file(self, entry: Entry) -> None:
        await self._send(entry)

    async def write(self, data: bytes) -> None:
        await self._send(data)
        self.written += len(data)

    async def end_file(self, entry: Entry) -> None:
        await self._send(None)

    async def finish(self) -> None:
        await self._send(None)
        await self._reply()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()


class Broadcast:
    """One read of the sources for ``expected`` sinks.

    Each host's task calls :meth:`deliver` with its opened sink (or
    :meth:`drop` if it could not open one); reading starts once every
    host has come, and ``deliver`` returns when its sink has everything.
    """

    def __init__(self, sources: list[str], expected: int) -> None:
        self.sources = sources
        self._expected = expected
        self._sinks: dict[Sink, asyncio.Future[None]] = {}
        self._pump: asyncio.Task[None] | None = None

    def drop(self) -> None:
        """A host will not come (it failed before its sink opened)."""
        self._expected -= 1
        self._maybe_start()

    async def deliver(self, sink: Sink) -> None:
        done = asyncio.get_running_loop().create_future()
        self._sinks[sink] = done
        self._maybe_start()
        try:
            await done
        finally:
            self._sinks.pop(sink, None)

    def _maybe_start(self) -> None:
        if self._pump is None and len(self._sinks) >= self._expected and self._sinks:
            self._pump = asyncio.get_running_loop().create_task(self._run())

    async def _each(self, call: Callable[[Sink], Awaitable[None]]) -> None:
        """``call`` on every live sink at once; a sink that fails is done,
        with its error, and the others go on."""
        sinks = [sink for sink, done in self._sinks.items() if not done.done()]
        results = await asyncio.gather(*(call(sink) for sink in sinks), return_exceptions=True)
        for sink, result in zip(sinks, results, strict=True):
            if isinstance(result, BaseException):
                done = self._sinks.get(sink)
                if done is not None and not done.done():
                    done.set_exception(result)

    def _live(self) -> bool:
        return any(not done.done() for done in self._sinks.values())

    async def _run(self) -> None:
        try:
            entries = await asyncio.to_thread(lambda: list(scan(self.sources)))
            for entry in entries:
                if not self._live():
                    return
                if entry[0] == "d":
                    await self._each(lambda sink, e=entry: sink.directory(e))  # type: ignore[misc]
                    continue
                await self._each(lambda sink, e=entry: sink.begin_file(e))  # type: ignore[misc]
                path = _source_path(self.sources, entry[1])
                with await asyncio.to_thread(open, path, "rb") as source:
                    while self._live() and (data := await asyncio.to_thread(source.read, BLOCK)):
                        await self._each(lambda sink, d=data: sink.write(d))  # type: ignore[misc]
                await self._each(lambda sink, e=entry: sink.end_file(e))  # type: ignore[misc]
            await self._each(lambda sink: sink.finish())
        except Exception as exc:  # the sources could not be read: every host fails
            for done in self._sinks.values():
                if not done.done():
                    done.set_exception(exc)
        for done in self._sinks.values():
            if not done.done():
                done.set_result(None)


def _source_path(sources: list[str], rel: str) -> str:
    return _remote._source_path(sources, rel)


# -- gets ---------------------------------------------------------------------


async def get_sftp(
    slot: Slot, remote_files: list[str], destination: str, create_dirs: bool
) -> None:
    """Copy ``remote_files`` over SFTP on ``slot``'s connection to ``destination``."""
    prepare(destination, create_dirs, len(remote_files))
    async with slot.conn.start_sftp_client() as sftp:
        await sftp.get(remote_files, destination, recurse=True, preserve=True)


async def get_through_gateway(
    gateway: Gateway, remote_files: list[str], destination: str, create_dirs: bool
) -> None:
    """Copy ``remote_files`` from a gateway's host to ``destination``."""
    sink = LocalSink(destination, create_dirs, len(remote_files))
    channel = gateway.remote_exec(_remote)
    try:
        await sink.open()
        await channel.send(("get", remote_files))
        while True:
            item = await channel.receive()
            if item[0] in ("done", "error"):
                if item[0] == "error":
                    raise OSError(f"on {gateway.id}: {item[1]}")
                break
            if item[0] == "d":
                await sink.directory(item)
                continue
            await sink.begin_file(item)
            while (data := await channel.receive()) is not None:
                await sink.write(data)
            await sink.end_file(item)
        await sink.finish()
    finally:
        sink.close()
        channel.close()


async def get_local(remote_files: list[str], destination: str, create_dirs: bool) -> None:
    """A get from this machine: a local copy with the same rules."""
    broadcast = Broadcast(remote_files, 1)
    sink = LocalSink(destination, create_dirs, len(remote_files))
    try:
        await sink.open()
        await broadcast.deliver(sink)
    finally:
        sink.close()
