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
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from typing import Any

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
        self.wanted: list[tuple[int, str, bool]] = []  # (index, path, hashed)
        self.requests: list[tuple[int, list[bytes] | None]] = []

    def path_of(self, rel: str) -> str:
        if not rel:
            return self.destdir
        return os.path.join(self.destdir, *rel.split("/"))

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
        for index, path, hashed in self.wanted:
            self.receive_file(path, hashed)
            self.channel.send(("ack", index))
        self.channel.send(("done", None))

    # -- the tree

    def apply(self, index: int, entry: tuple[Any, ...]) -> None:
        kind, rel = entry[0], entry[1]
        path = self.path_of(rel)
        try:
            st: os.stat_result | None = os.lstat(path)
        except FileNotFoundError:
            st = None
        if kind == "d":
            self.apply_directory(path, st, entry[2], entry[3])
        elif kind == "f":
            self.apply_file(index, path, st, entry[2], entry[3], entry[4])
        elif kind == "l":
            target = entry[2]
            if entry[3]:
                target = os.path.join(self.destdir, *target.split("/"))
            self.apply_link(path, st, target)
        else:
            raise ValueError(f"unknown entry kind {kind!r}")

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
        self.wanted.append((index, path, hashes is not None))
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
                elif isinstance(item, int):
                    if new is None:
                        kept += item
                    else:
                        if old is None:
                            old = cleanup.enter_context(open(path, "rb"))
                        old.seek(new.tell())
                        copy(old, new, item)
                elif item is None:  # the source was unreadable: leave ours
                    return
                else:
                    mode, mtime_ns = item
                    break
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
