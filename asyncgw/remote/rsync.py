"""The receiving end of :class:`asyncgw.files.RSync`, run on the far side.

Shipped as source by ``gateway.remote_exec(this_module)`` and run there with
the worker's blocking ``channel``: stdlib only, Python 3.9 syntax. It keeps
no state between runs; everything it needs comes over the channel.

The conversation (local side ``L``, this side ``R``)::

    L: (destdir, {"delete": bool, "block": int})
    L: [entry, ...]  ...  None            the source tree, in walk order
    R: ("want", [(index, hashes), ...])   files to send; hashes are the
       ...                                block hashes of our copy when
    R: ("listed", count)                  only its mtime differed, else None
    L: per wanted file, in index order: bytes (a new block), int (keep that
       many bytes of our copy), then (mode, mtime_ns) to finish it, or None
       when the source could not be read
    R: ("ack", index) per file finished, then ("done", None)

Entries are ``("d", rel, mode, names)``, ``("f", rel, mode, mtime_ns,
size)`` and ``("l", rel, target, rebase)``, ``rel`` being ``/``-separated
and ``""`` the root. A directory comes before what it holds, so each is
made (and, with ``delete``, cleared of names the source lacks) before its
entries arrive. Directories are kept owner-writable (mode | 0o700, as
execnet does) so that a later sync can write into them. A file is written
to a temporary file beside it and renamed over the old one, so read-only
files are replaced and a reader never sees half a file; the mode and mtime
are set before the rename.

Whatever the stream holds, nothing is written outside ``destdir``: every
name goes through :func:`asyncgw.remote.entries.entry_path` when its entry
arrives and again just before a file is written (a later entry may have
replaced a directory on the way by a symlink); ``""`` names the root only
as the first entry; modes, times, sizes and the items of a file's stream
are checked for their type. A refused entry ends the run with
:class:`~asyncgw.remote.entries.UnsafeEntry` naming it. Shipped with the
source of :mod:`asyncgw.remote.entries` ahead of this one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from typing import Any

try:
    from .entries import (
        UnsafeEntry,
        checked_mode,
        checked_number,
        entry_names,
        entry_path,
    )
except ImportError:  # shipped as source: entries.py's source came ahead of ours
    pass

#: Entries or requests per message.
BATCH = 1000


def block_hash(data: bytes) -> bytes:
    """The content hash of one block (both sides must agree on it)."""
    return hashlib.blake2b(data, digest_size=16).digest()


def hash_blocks(path: str, block: int) -> list[bytes] | None:
    """The block hashes of the file at ``path``, or None if unreadable."""
    hashes: list[bytes] = []
    try:
        with open(path, "rb") as file:
            while True:
                data = file.read(block)
                if not data:
                    return hashes
                hashes.append(block_hash(data))
    except OSError:
        return None


def remove(path: str) -> None:
    """Remove what is at ``path`` (a directory with all it holds; a symlink
    itself, never what it points to). Nothing there is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if st.st_mode & 0o700 != 0o700:
            os.chmod(path, stat.S_IMODE(st.st_mode) | 0o700)
        for name in os.listdir(path):
            remove(os.path.join(path, name))
        os.rmdir(path)
    else:
        os.unlink(path)


class Receiver:
    """Applies one source tree to ``destdir``."""

    def __init__(self, channel: Any, destdir: str, options: dict[str, Any]) -> None:
        self.channel = channel
        self.destdir = destdir
        self.delete = bool(options.get("delete"))
        self.block = int(options["block"])
        self.wanted: list[tuple[int, str, bool]] = []  # (index, rel, hashed)
        self.requests: list[tuple[int, list[bytes] | None]] = []

    def path_of(self, rel: Any, index: int = 1) -> str:
        """Where entry ``rel`` goes (the root, ``""``, only as entry 0).

        :raises UnsafeEntry: for a name that could lead elsewhere.
        """
        if rel == "" and index == 0:
            return self.destdir
        return entry_path(self.destdir, entry_names(rel), rel)

    def run(self) -> None:
        index = 0
        while True:
            batch = self.channel.receive()
            if batch is None:
                break
            for entry in batch:
                self.apply(index, entry)
                index += 1
        self.flush_requests()
        self.channel.send(("listed", len(self.wanted)))
        for index, rel, hashed in self.wanted:
            self.receive_file(self.file_path(rel, index), hashed)
            self.channel.send(("ack", index))
        self.channel.send(("done", None))

    # -- the tree

    def file_path(self, rel: str, index: int) -> str:
        """The path of a wanted file, checked again as it is written: it
        must still lead through directories only, to a regular file or
        nothing."""
        path = self.path_of(rel, index)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return path
        if not stat.S_ISREG(mode):
            raise UnsafeEntry("refused entry %r: replaced by another entry before written" % rel)
        return path

    def apply(self, index: int, entry: Any) -> None:
        if not isinstance(entry, (tuple, list)) or len(entry) not in (4, 5):
            raise UnsafeEntry("refused item %.200r: not an entry" % (entry,))
        kind, rel = entry[0], entry[1]
        if kind == "d" and len(entry) == 4:
            mode = checked_mode(entry[2], rel, set_id=True)
            names = entry[3]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise UnsafeEntry("refused entry %r: bad names %.200r" % (rel, names))
        elif kind == "f" and len(entry) == 5:
            mode = checked_mode(entry[2], rel, set_id=True)
            mtime_ns = checked_number(entry[3], rel, "mtime")
            size = checked_number(entry[4], rel, "size")
        elif kind == "l" and len(entry) == 4:
            target, rebase = entry[2], entry[3]
            if not isinstance(target, str) or "\x00" in target or not target:
                raise UnsafeEntry("refused entry %r: bad link target %.200r" % (rel, target))
            if rebase:  # a path inside the tree: plain names, like an entry's
                target = os.path.join(self.destdir, *entry_names(target))
        else:
            raise UnsafeEntry("refused entry %.200r: unknown kind or shape" % (entry,))
        path = self.path_of(rel, index)
        try:
            st: os.stat_result | None = os.lstat(path)
        except FileNotFoundError:
            st = None
        if kind == "d":
            self.apply_directory(path, st, mode, names)
        elif kind == "f":
            self.apply_file(index, rel, path, st, mode, mtime_ns, size)
        else:
            self.apply_link(path, st, target)

    def apply_directory(
        self, path: str, st: os.stat_result | None, mode: int, names: list[str]
    ) -> None:
        if st is not None and not stat.S_ISDIR(st.st_mode):
            remove(path)
            st = None
        if st is None:
            os.makedirs(path)
        wanted_mode = mode | 0o700
        if st is None or stat.S_IMODE(st.st_mode) != wanted_mode:
            os.chmod(path, wanted_mode)
        if self.delete:
            keep = set(names)
            for name in os.listdir(path):
                if name not in keep:
                    remove(os.path.join(path, name))

    def apply_file(
        self,
        index: int,
        rel: str,
        path: str,
        st: os.stat_result | None,
        mode: int,
        mtime_ns: int,
        size: int,
    ) -> None:
        hashes = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            remove(path)
        elif st is not None and st.st_size == size:
            if st.st_mtime_ns == mtime_ns:
                if stat.S_IMODE(st.st_mode) != mode:
                    os.chmod(path, mode)
                return  # up to date
            hashes = hash_blocks(path, self.block)
        self.wanted.append((index, rel, hashes is not None))
        self.requests.append((index, hashes))
        if len(self.requests) >= BATCH:
            self.flush_requests()

    def flush_requests(self) -> None:
        if self.requests:
            self.channel.send(("want", self.requests))
            self.requests = []

    def apply_link(self, path: str, st: os.stat_result | None, target: str) -> None:
        if st is not None:
            if stat.S_ISLNK(st.st_mode) and os.readlink(path) == target:
                return
            remove(path)
        os.symlink(target, path)

    # -- file contents

    def receive_file(self, path: str, hashed: bool) -> None:
        """Take one file's blocks; write it beside ``path`` and rename it
        over ``path``, unless every block was kept (then only the mode and
        mtime change)."""
        with contextlib.ExitStack() as cleanup:
            old = None  # our copy, read for kept blocks once something changed
            new = None  # the file written beside ours, once a block changed
            kept = 0  # bytes kept before the first changed block
            while True:
                item = self.channel.receive()
                if isinstance(item, bytes):
                    if new is None:
                        new, temporary = self.create_beside(path, cleanup)
                        if kept:
                            old = cleanup.enter_context(open(path, "rb"))
                            copy(old, new, kept)
                    new.write(item)
                elif isinstance(item, int) and not isinstance(item, bool):
                    if item < 0:
                        raise UnsafeEntry("refused entry %r: keep %d bytes" % (path, item))
                    if new is None:
                        kept += item
                    else:
                        if old is None:
                            old = cleanup.enter_context(open(path, "rb"))
                        old.seek(new.tell())
                        copy(old, new, item)
                elif item is None:  # the source was unreadable: leave ours
                    return
                elif isinstance(item, (tuple, list)) and len(item) == 2:
                    mode = checked_mode(item[0], path, set_id=True)
                    mtime_ns = checked_number(item[1], path, "mtime")
                    break
                else:
                    raise UnsafeEntry("refused entry %r: %.200r among its blocks" % (path, item))
            if new is None:
                if hashed:  # same content: only the metadata moves
                    os.chmod(path, mode)
                    os.utime(path, ns=(mtime_ns, mtime_ns))
                    return
                new, temporary = self.create_beside(path, cleanup)  # an empty file
            new.close()
            os.chmod(temporary, mode)
            os.utime(temporary, ns=(mtime_ns, mtime_ns))
            os.replace(temporary, path)

    def create_beside(self, path: str, cleanup: contextlib.ExitStack) -> tuple[Any, str]:
        """A new file in the directory of ``path`` and its path; closed and
        removed (if still there) when ``cleanup`` ends."""
        directory = os.path.dirname(path)
        fd, temporary = tempfile.mkstemp(prefix=".rsync-", suffix=".tmp", dir=directory)
        cleanup.callback(unlink_if_there, temporary)
        return cleanup.enter_context(open(fd, "wb")), temporary


def unlink_if_there(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def copy(source: Any, target: Any, size: int) -> None:
    """Copy ``size`` bytes (fewer at the end of ``source``)."""
    while size > 0:
        data = source.read(min(size, 1024 * 1024))
        if not data:
            return
        target.write(data)
        size -= len(data)


def serve(channel: Any) -> None:
    destdir, options = channel.receive()
    Receiver(channel, destdir, options).run()


if __name__ == "__channelexec__":
    serve(channel)  # type: ignore[name-defined]  # noqa: F821
