"""Copies of files and trees to and from many hosts (the fleet's ``Put``
and ``Get``), ``scp -r`` style: see :mod:`asyncgw.remote.files` for the
layout rules and the writer, which both sides share.

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

Invariants: whatever a far side sends (names, sizes, modes, items out of
place), a get writes only inside its destination, through
:class:`asyncgw.remote.files.Writer` (whose names are all checked by
:func:`asyncgw.remote.entries.entry_path`); every copy of a file, both
ways, is written under a temporary name beside its place and renamed
there once complete, so a failure never leaves a partial file under the
real name. A host whose SSH server has no SFTP subsystem is copied to and
from through a gateway started over an exec channel of the same
connection (``python3`` there), after the same checks (:class:`HostSink`,
:func:`get_host`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import stat
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncssh

from ..remote import files as _remote
from ..remote.entries import UnsafeEntry, entry_names, shipped_with
from ..remote.files import BLOCK, Writer, checked_entry, read_exactly, scan

if TYPE_CHECKING:
    from .._channel import Channel
    from .._gateway import Gateway
    from .._group import Group
    from ..transports.sshpool import Slot, SSHTarget

__all__ = [
    "Broadcast",
    "GatewaySink",
    "HostSink",
    "LocalSink",
    "SftpSink",
    "Sink",
    "get_host",
    "get_local",
    "get_sftp",
    "get_through_gateway",
]

log = logging.getLogger("asyncgw")

#: An entry of :func:`asyncgw.remote.files.scan`.
Entry = tuple[Any, ...]

#: SFTP writes in flight per host (each up to a block, itself split by
#: asyncssh into parallel requests).
_WRITES_IN_FLIGHT = 2

#: The far-side module, with the entry checks shipped ahead of it.
_REMOTE_SOURCE = shipped_with(_remote)


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

    async def close(self) -> None:
        """Let go of connections and channels, and of a partly written
        file (also after a failure)."""


class LocalSink(Sink):
    """Writes to this machine (put to ``localhost``, and gets)."""

    async def open(self) -> None:
        self._writer = Writer(self.destination, self.create_dirs, self.sources)

    async def directory(self, entry: Entry) -> None:
        self._writer.directory(entry)

    async def begin_file(self, entry: Entry) -> None:
        await asyncio.to_thread(self._writer.begin, entry)

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        self.written += len(data)

    async def end_file(self, entry: Entry) -> None:
        self._writer.end()

    async def finish(self) -> None:
        self._writer.finish()

    async def close(self) -> None:
        if hasattr(self, "_writer"):
            self._writer.abort()


class SftpSink(Sink):
    """Writes over SFTP, on a session of the host's shared connection;
    each file under a temporary name, renamed once complete."""

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
        self._temporary: str | None = None
        self._writes: list[asyncio.Task[int]] = []
        self._offset = 0
        self._dirs: list[tuple[str, int, float]] = []

    async def open(self) -> None:
        """:raises asyncssh.ChannelOpenError: if the host has no SFTP subsystem."""
        if self._slot is None:
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
        self._temporary = posixpath.join(
            posixpath.dirname(self._path), f".asyncgw-{uuid.uuid4().hex[:12]}.part"
        )
        self._file = await self._sftp.open(self._temporary, "wb")
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
        assert self._temporary is not None
        writes, self._writes = self._writes, []
        await asyncio.gather(*writes)
        await self._file.close()
        self._file = None
        await self._sftp.chmod(self._temporary, entry[2])
        await self._sftp.utime(self._temporary, (entry[3], entry[3]))
        try:
            await self._sftp.posix_rename(self._temporary, self._path)
        except asyncssh.SFTPOpUnsupported:  # plain SFTP rename refuses to replace
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                await self._sftp.remove(self._path)
            await self._sftp.rename(self._temporary, self._path)
        self._temporary = None

    async def finish(self) -> None:
        assert self._sftp is not None
        for path, mode, mtime in reversed(self._dirs):
            await self._sftp.chmod(path, mode | 0o700)
            await self._sftp.utime(path, (mtime, mtime))

    async def close(self) -> None:
        for task in self._writes:
            task.cancel()
        if self._sftp is not None:
            with contextlib.suppress(Exception):  # the first failure is the one reported
                if self._file is not None:
                    await self._file.close()
                if self._temporary is not None:
                    await self._sftp.remove(self._temporary)
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
        self._channel = self._gateway.remote_exec(_REMOTE_SOURCE)
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

    async def close(self) -> None:
        if self._channel is not None:
            self._channel.close()


class HostSink(Sink):
    """Writes to a host over SSH: with SFTP, or, where its server has no
    SFTP subsystem, through a gateway over an exec channel (see
    :func:`exec_gateway`)."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Slot]],
        destination: str,
        create_dirs: bool,
        sources: int,
        timeout: float,
    ) -> None:
        super().__init__(destination, create_dirs, sources)
        self._connect = connect
        self._timeout = timeout
        self._inner: Sink | None = None
        self._group: Group | None = None

    async def open(self) -> None:
        slot = await self._connect()
        sftp = SftpSink(self._connect, self.destination, self.create_dirs, self.sources)
        sftp._slot = slot
        self._inner = sftp
        try:
            await sftp.open()
            return
        except asyncssh.ChannelOpenError as exc:
            if not _no_sftp(exc):
                raise
            no_sftp = exc
        self._inner = None
        target = slot.target
        await sftp.close()
        self._group, gateway = await exec_gateway(target, self._timeout, no_sftp)
        self._inner = GatewaySink(gateway, self.destination, self.create_dirs, self.sources)
        await self._inner.open()

    @property
    def _sink(self) -> Sink:
        assert self._inner is not None
        return self._inner

    async def directory(self, entry: Entry) -> None:
        await self._sink.directory(entry)

    async def begin_file(self, entry: Entry) -> None:
        await self._sink.begin_file(entry)

    async def write(self, data: bytes) -> None:
        await self._sink.write(data)
        self.written += len(data)

    async def end_file(self, entry: Entry) -> None:
        await self._sink.end_file(entry)

    async def finish(self) -> None:
        await self._sink.finish()

    async def close(self) -> None:
        try:
            if self._inner is not None:
                await self._inner.close()
        finally:
            if self._group is not None:
                await self._group.terminate(timeout=self._timeout)


def _no_sftp(exc: asyncssh.ChannelOpenError) -> bool:
    """Whether the server opened the session but refused the ``sftp``
    subsystem in it (not: refused the session, for its limits)."""
    return exc.code == asyncssh.OPEN_REQUEST_SESSION_FAILED


def _gateway_spec(target: SSHTarget, timeout: float) -> str:
    """An ``ssh=`` spec for the same connection as ``target`` (the pool
    shares it: same host, user and options)."""
    host = f"[{target.host}]" if ":" in target.host else target.host  # an IPv6 address
    user = f"{target.user}@" if target.user else ""
    port = f":{target.port}" if target.port else ""
    keys = [f"ssh={user}{host}{port}"]
    keys += [f"{key}={value}" for key, value in target.options if value is not None]
    return "//".join([*keys, f"connect_timeout={timeout}"])


async def exec_gateway(
    target: SSHTarget, timeout: float, no_sftp: asyncssh.ChannelOpenError
) -> tuple[Group, Gateway]:
    """A gateway (in a group of its own) on ``target``, over an exec
    channel of its shared connection, for a host whose SSH server refused
    an SFTP session (``no_sftp``).

    :raises OSError: naming both failures, if the gateway cannot start
        either (e.g. no ``python3`` there).
    """
    from .._group import Group  # the core, above which this module sits

    log.info(
        "%s has no SFTP subsystem (%s: %s): copying over an exec channel",
        target,
        type(no_sftp).__name__,
        no_sftp.reason,
    )
    group = Group(exit_timeout=timeout)
    try:
        gateway = await group.makegateway(_gateway_spec(target, timeout))
    except Exception as exc:
        await group.terminate(timeout=timeout)
        raise OSError(
            f"{target} has no SFTP subsystem ({type(no_sftp).__name__}: {no_sftp.reason}),"
            f" and copying over an exec channel failed too: {type(exc).__name__}: {exc}"
        ) from exc
    return group, gateway


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
                await self._send_file(entry)
            await self._each(lambda sink: sink.finish())
        except Exception as exc:  # the sources could not be read: every host fails
            for done in self._sinks.values():
                if not done.done():
                    done.set_exception(exc)
        for done in self._sinks.values():
            if not done.done():
                done.set_result(None)

    async def _send_file(self, entry: Entry) -> None:
        """One file to every live sink: opened before any sink begins it
        (an unreadable file fails alone, leaving nothing), and exactly the
        size the entry announces (a file that grew is cut there)."""
        path = _source_path(self.sources, entry[1])
        with await asyncio.to_thread(open, path, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            entry = (*entry[:4], size)
            await self._each(lambda sink: sink.begin_file(entry))
            blocks = read_exactly(source, size, path)
            while self._live() and (data := await asyncio.to_thread(next, blocks, b"")):
                await self._each(lambda sink, d=data: sink.write(d))  # type: ignore[misc]
        await self._each(lambda sink: sink.end_file(entry))


def _source_path(sources: list[str], rel: str) -> str:
    return _remote._source_path(sources, rel)


# -- gets ---------------------------------------------------------------------


async def get_host(
    slot: Slot, remote_files: list[str], destination: str, create_dirs: bool, timeout: float
) -> None:
    """Copy ``remote_files`` from ``slot``'s host to ``destination``: over
    SFTP, or through a gateway over an exec channel if its server has no
    SFTP subsystem."""
    try:
        sftp = await slot.conn.start_sftp_client()
    except asyncssh.ChannelOpenError as exc:
        if not _no_sftp(exc):
            raise
        group, gateway = await exec_gateway(slot.target, timeout, exc)
        try:
            await get_through_gateway(gateway, remote_files, destination, create_dirs)
        finally:
            await group.terminate(timeout=timeout)
        return
    async with sftp:
        await _get_sftp(sftp, remote_files, destination, create_dirs)


async def get_sftp(
    slot: Slot, remote_files: list[str], destination: str, create_dirs: bool
) -> None:
    """Copy ``remote_files`` over SFTP on ``slot``'s connection to ``destination``."""
    async with slot.conn.start_sftp_client() as sftp:
        await _get_sftp(sftp, remote_files, destination, create_dirs)


async def _get_sftp(
    sftp: asyncssh.SFTPClient, remote_files: list[str], destination: str, create_dirs: bool
) -> None:
    """A get over an SFTP session, in :func:`asyncgw.remote.files.scan`'s
    order and layout (symlinks followed, but not into directories), each
    name the server lists checked as one plain name."""
    sink = LocalSink(destination, create_dirs, len(remote_files))
    try:
        await sink.open()
        for path in remote_files:
            path = path.rstrip("/") or "/"
            top = posixpath.basename(path) or path
            attrs = await sftp.stat(path)
            await _get_sftp_entry(sftp, sink, path, top, attrs, descend=True)
        await sink.finish()
    finally:
        await sink.close()


async def _get_sftp_entry(
    sftp: asyncssh.SFTPClient,
    sink: LocalSink,
    path: str,
    rel: str,
    attrs: asyncssh.SFTPAttrs,
    descend: bool,
) -> None:
    mode = attrs.permissions or 0
    if stat.S_ISDIR(mode):
        await sink.directory(checked_entry(("d", rel, stat.S_IMODE(mode), attrs.mtime or 0)))
        if not descend:
            return
        children = []
        async for child in sftp.scandir(path):
            name = child.filename
            if name in (".", ".."):
                continue
            if not isinstance(name, str) or len(entry_names(name)) != 1:
                raise UnsafeEntry(f"refused entry {rel + '/' + str(name)!r}: not a plain name")
            children.append((name, child.attrs))
        # scan's order: the directories, then the files, each sorted by name
        listed = []
        for name, child_attrs in sorted(children):
            child_path = posixpath.join(path, name)
            followed = child_attrs
            if stat.S_ISLNK(child_attrs.permissions or 0):
                try:
                    followed = await sftp.stat(child_path)
                except asyncssh.SFTPNoSuchFile:  # dangling: scan leaves it out too
                    continue
            listed.append((name, child_path, child_attrs, followed))
        for is_dir in (True, False):
            for name, child_path, own, followed in listed:
                if stat.S_ISDIR(followed.permissions or 0) == is_dir:
                    link = stat.S_ISLNK(own.permissions or 0)
                    await _get_sftp_entry(
                        sftp, sink, child_path, f"{rel}/{name}", followed, not link
                    )
        return
    if not stat.S_ISREG(mode):
        return
    async with sftp.open(path, "rb") as source:  # opened first: an unreadable file is named alone
        size = (await source.stat()).size or 0
        await sink.begin_file(checked_entry(("f", rel, stat.S_IMODE(mode), attrs.mtime or 0, size)))
        offset = 0
        while offset < size:
            data = await source.read(min(BLOCK, size - offset), offset)
            assert isinstance(data, bytes)  # opened in binary mode
            if not data:
                raise OSError(f"{path} shrank while read ({offset} of {size} bytes)")
            await sink.write(data)
            offset += len(data)
    await sink.end_file(())


async def get_through_gateway(
    gateway: Gateway, remote_files: list[str], destination: str, create_dirs: bool
) -> None:
    """Copy ``remote_files`` from a gateway's host to ``destination``,
    each item the far side sends checked before anything is written.

    :raises UnsafeEntry: for an entry or item no honest far side sends.
    :raises OSError: for the far side's error (a file it cannot read).
    """
    sink = LocalSink(destination, create_dirs, len(remote_files))
    channel = gateway.remote_exec(_REMOTE_SOURCE)
    try:
        await sink.open()
        await channel.send(("get", remote_files))
        while True:
            item = await channel.receive()
            if _is_end(item, gateway):
                break
            entry = checked_entry(item)
            if entry[0] == "d":
                await sink.directory(entry)
                continue
            await sink.begin_file(entry)
            while (data := await channel.receive()) is not None:
                if not isinstance(data, bytes):
                    _is_end(data, gateway)  # raises for the far side's error
                await sink.write(data)
            await sink.end_file(entry)
        await sink.finish()
    except UnsafeEntry as exc:
        raise UnsafeEntry(f"from {gateway.id}: {exc}") from None
    finally:
        await sink.close()
        channel.close()


def _is_end(item: object, gateway: Gateway) -> bool:
    """Whether ``item`` is the far side's ``("done", None)``.

    :raises OSError: for its ``("error", text)``.
    """
    if isinstance(item, tuple) and len(item) == 2 and item[0] in ("done", "error"):
        if item[0] == "error":
            raise OSError(f"on {gateway.id}: {item[1]}")
        return True
    return False


async def get_local(remote_files: list[str], destination: str, create_dirs: bool) -> None:
    """A get from this machine: a local copy with the same rules."""
    broadcast = Broadcast(remote_files, 1)
    sink = LocalSink(destination, create_dirs, len(remote_files))
    try:
        await sink.open()
        await broadcast.deliver(sink)
    finally:
        await sink.close()
