"""RSync: one source tree to the directories of many gateways.

execnet's ``RSync`` on the async API, with its constructor, its hooks
(``filter``, ``_report_send_file``, the ``callback(command, size,
channel)`` progress calls) and its ``add_target``/``send`` cycle, for
which :mod:`asyncgw.remote.rsync` is the receiving end (see its
docstring for the conversation).

Invariants: the tree is walked once and each file that some target needs
is read once, block by block, whatever the number of targets; a target
asks only for files whose size or mtime differ from its copy, and for
those whose size matches it sends block hashes of its copy, so only the
blocks that changed travel. Blocks go with ``channel.send``, so memory is
bounded by the channels' windows, not by file sizes. All targets work in
parallel; the slowest one paces the file stream.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from .. import Channel, ChannelError, Gateway, GatewayError, RemoteError
from ..remote import rsync as _remote
from ..remote.entries import shipped_with

__all__ = ["BLOCK_SIZE", "Progress", "RSync"]

#: Bytes per block: the unit of reading, sending and hash comparison.
BLOCK_SIZE = 256 * 1024

#: ``progress(gateway_id, relpath, sent, size)``; see :meth:`RSync.send`.
Progress = Callable[[str, str, int, int], object]

#: A manifest entry: ("d", rel, mode, names), ("f", rel, mode, mtime_ns,
#: size) or ("l", rel, target, rebase).
_Entry = tuple[Any, ...]

#: The receiving end, with the entry checks shipped ahead of it.
_REMOTE_SOURCE = shipped_with(_remote)

#: What ends one target's part (and only that target's): the others go on.
_TARGET_ERRORS = (ChannelError, GatewayError, OSError)


@dataclass(eq=False)
class _Target:
    gateway: Gateway
    destdir: str
    finished: Callable[[], object] | None
    delete: bool
    channel: Channel | None = None
    #: manifest index -> block hashes of the target's copy (None: send all)
    wants: dict[int, list[bytes] | None] = field(default_factory=dict)
    listed: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None


def checked_source(sourcedir: str | os.PathLike[str], callback: object) -> str:
    """The source directory as RSync keeps it (a trailing separator
    normalised away, as execnet did in ``send()``), once ``callback`` is
    known to be callable or None.

    :raises TypeError: for a callback that is not callable.
    """
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, not {type(callback).__name__}")
    return os.path.dirname(os.path.join(os.fspath(sourcedir), "x"))


class RSync:
    """Send the directory ``sourcedir`` (recursively) to one or more
    gateways, execnet style::

        rsync = RSync("src")
        rsync.add_target(gateway1, "/tmp/src")
        rsync.add_target(gateway2, "/tmp/src", delete=True)
        await rsync.send()

    Files, directories and symlinks are synchronised; file modes and
    mtimes are kept. A symlink whose target is an absolute path inside the
    source tree is recreated pointing to the same place in the destination;
    other symlinks (relative ones, and absolute ones leading outside the
    tree) are recreated as they are, dangling or not. Directories on a
    target are kept owner-writable. Other file types (sockets, fifos,
    devices) make :meth:`send` raise ``ValueError``, as in execnet.

    ``callback``, ``finishedcallback``, ``progress`` and
    ``_report_send_file`` are called on the event loop, and the transfer
    waits for each: they must not block, and may be coroutine functions.
    ``filter`` is called from a worker thread.

    :param sourcedir: the directory (or single file) to send.
    :param callback: execnet's progress callback ``callback(command, size,
        channel)``: ``("list", total, channel)`` once a target has said what
        it needs (``total`` bytes of files to send), ``("ack", size,
        channel)`` for each file it has written.
    :param verbose: whether the default :meth:`_report_send_file` prints.
    """

    def __init__(
        self,
        sourcedir: str | os.PathLike[str],
        callback: Callable[[str, int, Channel], object] | None = None,
        verbose: bool = True,
    ) -> None:
        self._sourcedir = checked_source(sourcedir, callback)
        self._verbose = verbose
        self._callback = callback
        self._targets: list[_Target] = []
        self._unread: list[OSError] = []  # of the current send()

    # -- hooks

    def filter(self, path: str) -> bool:
        """Whether to send ``path`` (a path under the source directory, not
        the directory itself); override to leave things out. A directory
        left out is not descended into. Called from a worker thread while
        the tree is walked.
        """
        return True

    def _report_send_file(self, gateway: Any, modified_rel_path: str) -> None:
        """Called (on the event loop) before a file's contents go to
        ``gateway``; prints a line when ``verbose``."""
        if self._verbose:
            print(f"{gateway} <= {modified_rel_path}")

    async def _run_hook(self, hook: Callable[..., object], *args: Any) -> None:
        """Call a hook or user callback; here directly, on the loop (and
        await what it returns if that is awaitable). The blocking twin runs
        them in a thread, with its own objects."""
        result = hook(*args)
        if inspect.isawaitable(result):
            await result

    # -- targets

    def add_target(
        self,
        gateway: Gateway,
        destdir: str | os.PathLike[str],
        finishedcallback: Callable[[], object] | None = None,
        delete: bool = False,
    ) -> None:
        """Send the tree to ``destdir`` on ``gateway`` at the next
        :meth:`send` (a relative ``destdir`` is relative to the remote
        working directory; it is created if missing).

        :param finishedcallback: called without arguments as soon as that
            target is complete; not called for a target that failed.
        :param delete: remove what ``destdir`` holds that the source does
            not (what ``filter`` leaves out counts as not in the source).
        """
        self._targets.append(_Target(gateway, os.fspath(destdir), finishedcallback, delete))

    # -- sending

    async def send(self, raises: bool = True, progress: Progress | None = None) -> None:
        """Send the tree to every target added since the last ``send``, in
        parallel, and wait until all are complete; the targets are then
        used up.

        :param raises: with no targets, raise (True) or return (False).
        :param progress: called as ``progress(gateway_id, relpath, sent,
            size)`` after each block of a file sent to a target, ``sent``
            being the bytes of that file sent so far (blocks the target
            already had do not travel and do not count) and ``size`` the
            file's size; an empty file reports ``(0, 0)`` once. A file that
            does not travel is not reported.
        :raises OSError: if there are no targets and ``raises`` is true, or
            if the source tree cannot be read.
        :raises ValueError: for a file type that cannot be synchronised.
        :raises OSError: the first one, if a file in the walk could not be
            read when its turn came (it vanished, or became unreadable):
            everything else is completed first, the targets keep their copy
            of that file, and each further such file is added as a note.
        :raises RemoteError: if a target failed (e.g. permission denied
            there); the other targets are completed first, and the errors
            of further failed targets are added as notes.
        :raises GatewayLost: if a target's gateway went away.

        Cancelling closes the targets' channels: the remote sides stop,
        leaving the files already written and removing a partly written one.
        """
        targets, self._targets = self._targets, []
        self._unread = []
        if not targets:
            if raises:
                raise OSError("no targets available, maybe you are trying call send() twice?")
            return
        try:
            for target in targets:
                await self._start(target)
            manifest = await asyncio.to_thread(self._walk)
            try:
                async with asyncio.TaskGroup() as tasks:
                    readers = [tasks.create_task(self._read_replies(t, manifest)) for t in targets]
                    await asyncio.gather(*(self._send_manifest(t, manifest) for t in targets))
                    await asyncio.gather(*(t.listed.wait() for t in targets))
                    await self._send_files(targets, manifest, progress)
                    await asyncio.gather(*readers)
            except BaseExceptionGroup as group:  # a hook raised: that error, as itself
                first = group.exceptions[0]
                if len(group.exceptions) > 1:
                    first.add_note(f"({len(group.exceptions) - 1} more concurrent failures)")
                raise first from None
        finally:
            for target in targets:
                if target.channel is not None:
                    target.channel.close()
        failed = [t for t in targets if t.error is not None]
        if failed:
            error = failed[0].error
            assert error is not None
            error.add_note(f"rsync to {failed[0].gateway.id}:{failed[0].destdir} failed")
            for other in failed[1:]:
                error.add_note(f"{other.gateway.id} failed too: {other.error!r}")
            for unread in self._unread:
                error.add_note(f"not sent, could not be read: {unread}")
            raise error
        if self._unread:
            first = self._unread[0]
            first.add_note(
                "a source file could not be read during the sync (it vanished or became"
                " unreadable after the walk); the targets keep their copy of it"
            )
            for unread in self._unread[1:]:
                first.add_note(f"not sent either: {unread}")
            raise first

    async def _start(self, target: _Target) -> None:
        target.channel = target.gateway.remote_exec(_REMOTE_SOURCE)
        options = {"delete": target.delete, "block": BLOCK_SIZE}
        await target.channel.send((target.destdir, options))

    def _fail(self, target: _Target, error: BaseException) -> None:
        """Record why ``target`` stopped (its remote error is the most
        telling) and let it go; the other targets carry on."""
        if target.error is None or (
            isinstance(error, RemoteError) and not isinstance(target.error, RemoteError)
        ):
            target.error = error
        target.listed.set()
        assert target.channel is not None
        target.channel.close()

    async def _send_manifest(self, target: _Target, manifest: list[_Entry]) -> None:
        assert target.channel is not None
        try:
            for start in range(0, len(manifest), _remote.BATCH):
                await target.channel.send(manifest[start : start + _remote.BATCH])
            await target.channel.send(None)
        except _TARGET_ERRORS as exc:
            self._fail(target, exc)

    async def _read_replies(self, target: _Target, manifest: list[_Entry]) -> None:
        """Take what the target says: its wants, then an ack per file."""
        channel = target.channel
        assert channel is not None
        try:
            while True:
                command, value = await channel.receive()
                if command == "want":
                    target.wants.update(value)
                elif command == "listed":
                    target.listed.set()
                    if self._callback is not None:
                        total = sum(manifest[index][4] for index in target.wants)
                        await self._run_hook(self._callback, "list", total, channel)
                elif command == "ack":
                    if self._callback is not None:
                        size = manifest[value][4]
                        await self._run_hook(self._callback, "ack", size, channel)
                elif command == "done":
                    await channel.waitclose()
                    break
                else:
                    raise RemoteError(f"unexpected message from the rsync receiver: {command!r}")
        except _TARGET_ERRORS as exc:
            self._fail(target, exc)
            return
        if target.finished is not None:
            await self._run_hook(target.finished)

    async def _send_files(
        self, targets: list[_Target], manifest: list[_Entry], progress: Progress | None
    ) -> None:
        """Read each wanted file once and stream its blocks to the targets
        that want it."""
        wanted = sorted({index for target in targets for index in target.wants})
        for index in wanted:
            receivers = [t for t in targets if t.error is None and index in t.wants]
            if receivers:
                await self._send_file(receivers, manifest[index], index, progress)

    async def _send_file(
        self, receivers: list[_Target], entry: _Entry, index: int, progress: Progress | None
    ) -> None:
        rel, size = entry[1], entry[4]
        path = os.path.join(self._sourcedir, *rel.split("/")) if rel else self._sourcedir
        hashed = any(target.wants[index] is not None for target in receivers)
        source = _SourceFile(path, hashed)
        sent = dict.fromkeys(receivers, -1)  # bytes sent; -1: not reported yet
        try:
            block = 0
            while source.end is None:
                try:
                    data, digest = await asyncio.to_thread(source.read)
                except OSError as exc:  # unreadable, or gone since the walk: targets keep theirs
                    self._unread.append(exc)
                    for target in receivers:
                        await self._deliver(target, None)
                    return
                if data:
                    took = await self._send_block(receivers, index, rel, block, data, digest, sent)
                    if progress is not None:
                        for target in took:
                            await self._run_hook(
                                progress, target.gateway.id, rel, sent[target], size
                            )
                block += 1
        finally:
            source.close()
        for target in receivers:
            if sent[target] < 0 and target.wants[index] is None:  # an empty file
                await self._run_hook(self._report_send_file, target.gateway, rel)
                if progress is not None:
                    await self._run_hook(progress, target.gateway.id, rel, 0, 0)
            await self._deliver(target, source.end)

    async def _send_block(
        self,
        receivers: list[_Target],
        index: int,
        rel: str,
        block: int,
        data: bytes,
        digest: bytes | None,
        sent: dict[_Target, int],
    ) -> list[_Target]:
        """Send one block to each target, or just its size to a target
        whose copy has the same block; the targets that took the block."""
        took = []
        for target in receivers:
            hashes = target.wants[index]
            if hashes is not None and block < len(hashes) and hashes[block] == digest:
                await self._deliver(target, len(data))
                continue
            if sent[target] < 0:
                sent[target] = 0
                await self._run_hook(self._report_send_file, target.gateway, rel)
            if await self._deliver(target, data):
                sent[target] += len(data)
                took.append(target)
        return took

    async def _deliver(self, target: _Target, item: object) -> bool:
        """Send ``item`` unless the target has failed; False if it has."""
        if target.error is not None:
            return False
        assert target.channel is not None
        try:
            await target.channel.send(item)
        except _TARGET_ERRORS as exc:
            self._fail(target, exc)
            return False
        return True

    # -- the source tree (in a worker thread)

    def _walk(self) -> list[_Entry]:
        """The manifest: every entry under the source that ``filter``
        accepts, each directory before what it holds."""
        root = self._sourcedir
        manifest: list[_Entry] = []
        stack: list[tuple[str, str, os.stat_result]] = [(root, "", os.lstat(root))]
        while stack:
            path, rel, st = stack.pop()
            mode = st.st_mode
            if stat.S_ISREG(mode):
                manifest.append(("f", rel, stat.S_IMODE(mode), st.st_mtime_ns, st.st_size))
            elif stat.S_ISLNK(mode):
                manifest.append(("l", rel, *self._link_target(path)))
            elif stat.S_ISDIR(mode):
                children = self._children(path, rel)
                names = [os.path.basename(child[0]) for child in children]
                manifest.append(("d", rel, stat.S_IMODE(mode), names))
                stack.extend(reversed(children))
            else:
                raise ValueError(f"cannot sync {path!r}: not a file, directory or symlink")
        return manifest

    def _children(self, path: str, rel: str) -> list[tuple[str, str, os.stat_result]]:
        children = []
        for name in sorted(os.listdir(path)):
            child = os.path.join(path, name)
            if not self.filter(child):
                continue
            try:
                st = os.lstat(child)
            except FileNotFoundError:  # gone since listdir (or removed by filter)
                continue
            children.append((child, f"{rel}/{name}" if rel else name, st))
        return children

    def _link_target(self, path: str) -> tuple[str, bool]:
        """What a symlink points to, and whether that is a path inside the
        source tree, to be rebased onto the destination (then ``/``
        separated and relative to the top)."""
        target = os.readlink(path)
        if not os.path.isabs(target):
            return target, False
        try:
            inside = os.path.relpath(target, os.path.abspath(self._sourcedir))
        except ValueError:  # another drive
            return target, False
        if inside in (os.curdir, os.pardir) or inside.startswith(os.pardir + os.sep):
            return target, False
        return inside.replace(os.sep, "/"), True


class _SourceFile:
    """One source file, read a block at a time from worker threads; the
    block that ends it also takes its mode and mtime and closes it, so a
    small file costs one thread hop."""

    def __init__(self, path: str, hashed: bool) -> None:
        self._path = path
        self._hashed = hashed
        self._file: IO[bytes] | None = None
        #: (mode, mtime_ns) once the whole file has been read
        self.end: tuple[int, int] | None = None

    def read(self) -> tuple[bytes, bytes | None]:
        """The next block and its hash (if hashing). In a worker thread.

        :raises OSError: if the file cannot be opened or read.
        """
        if self._file is None:
            self._file = open(self._path, "rb")  # noqa: SIM115 - closed at the end or by close()
        data = self._file.read(BLOCK_SIZE)
        if len(data) < BLOCK_SIZE:  # the end (a short read is one, for a file)
            st = os.fstat(self._file.fileno())
            self._file.close()
            self.end = (stat.S_IMODE(st.st_mode), st.st_mtime_ns)
        return data, _remote.block_hash(data) if self._hashed and data else None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
