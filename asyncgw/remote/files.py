"""The far side of the fleet's ``Put`` and ``Get`` through a gateway, and
the one writer of copied trees that both sides use.

Shipped by ``gateway.remote_exec(shipped_with(this_module))`` (the source
of :mod:`asyncgw.remote.entries` ahead of it) and run with the worker's
blocking ``channel``: stdlib only, Python 3.9 syntax. The local side
imports :class:`Writer`, :func:`scan` and :func:`prepare` from here too, so
that both sides lay out, check and write trees the same way.

Copies follow ``scp -r``: each source (a file or a directory tree) goes
*into* the destination if that is a directory (made first with
``create_dirs``), or *becomes* the destination if there is exactly one
source. Modes and modification times are kept (a get drops the
set-user and set-group ID bits: a host never grants them here).

Entries: ``("d", rel, mode, mtime)`` and ``("f", rel, mode, mtime,
size)``; ``rel`` is ``/``-separated and starts with the source's name.

Receiving (``put``), local side ``L``, this side ``R``::

    L: ("put", destination, create_dirs, sources)
    L: entry ... (a file entry is followed by exactly ``size`` bytes, as
       bytes items, then None) ... then None
    R: ("done", None) or ("error", text)

Sending (``get``)::

    L: ("get", [path, ...])
    R: entry, its bytes and None per file, ..., then ("done", None); or
       ("error", text) at any point, also in place of a file's bytes (a
       path that cannot be read, a file that shrank while read)

Invariants of :class:`Writer`, whoever sent the entries: every path comes
from :func:`asyncgw.remote.entries.entry_path` (nothing is written outside
the destination, whatever the names); a file is written to a temporary
name beside its place and renamed there only once exactly its announced
size arrived, so no partial file is ever left under the real name, and
the temporary one is removed on any failure; a sender's error or a
malformed item ends the copy with that error, naming the entry.
"""

import os
import stat
import tempfile

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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterator, List, Optional, Tuple  # noqa: F401 - type comments

#: Bytes per block read and sent.
BLOCK = 1024 * 1024


def place(destination: str, into: bool, rel: "Any") -> str:
    """Where entry ``rel`` goes: inside ``destination`` if ``into``, else
    with the source's own name replaced by ``destination``.

    :raises UnsafeEntry: for a name that could lead elsewhere.
    """
    names = entry_names(rel)
    return entry_path(destination, names if into else names[1:], rel)


def checked_entry(item: "Any", set_id: bool = False) -> "Tuple[Any, ...]":
    """``item`` as an entry, once its shape and values are those of an
    honest :func:`scan` (the name is checked by :func:`place`); its mode
    without the set-user and set-group ID bits unless ``set_id`` (a put
    keeps them: the user sends them; a get does not grant them).

    :raises UnsafeEntry: otherwise, naming the item.
    """
    if isinstance(item, (tuple, list)) and len(item) == 4 and item[0] == "d":
        rel = item[1]
        mode = checked_mode(item[2], rel, set_id)
        return ("d", rel, mode, checked_number(item[3], rel, "mtime", False))
    if isinstance(item, (tuple, list)) and len(item) == 5 and item[0] == "f":
        rel = item[1]
        return (
            "f",
            rel,
            checked_mode(item[2], rel, set_id),
            checked_number(item[3], rel, "mtime", False),
            checked_number(item[4], rel, "size"),
        )
    raise UnsafeEntry("refused item %.200r: not an entry" % (item,))


def scan(paths: "List[str]") -> "Iterator[Tuple[Any, ...]]":
    """Entries for ``paths`` (files or trees), parents before children.

    :raises OSError: for a path that does not exist.
    """
    for path in paths:
        path = path.rstrip("/") or "/"
        top = os.path.basename(path) or path
        info = os.stat(path)
        if not stat.S_ISDIR(info.st_mode):
            yield ("f", top, stat.S_IMODE(info.st_mode), info.st_mtime, info.st_size)
            continue
        yield ("d", top, stat.S_IMODE(info.st_mode), info.st_mtime)
        for root, dirs, files in os.walk(path):
            dirs.sort()
            base = top + root[len(path) :].replace(os.sep, "/")
            for name in dirs:
                info = os.stat(os.path.join(root, name))
                yield ("d", base + "/" + name, stat.S_IMODE(info.st_mode), info.st_mtime)
            for name in sorted(files):
                full = os.path.join(root, name)
                info = os.stat(full)
                if stat.S_ISREG(info.st_mode):
                    yield (
                        "f",
                        base + "/" + name,
                        stat.S_IMODE(info.st_mode),
                        info.st_mtime,
                        info.st_size,
                    )


def prepare(destination: str, create_dirs: bool, sources: int) -> bool:
    """Whether sources go into ``destination`` (see the module docstring).

    :raises OSError: when several sources go to what is not a directory.
    """
    if create_dirs:
        os.makedirs(destination, exist_ok=True)
    if os.path.isdir(destination):
        return True
    if sources > 1:
        raise NotADirectoryError(f"{destination} is not a directory (for {sources} sources)")
    return False


def read_exactly(source: "Any", size: int, path: str) -> "Iterator[bytes]":
    """The first ``size`` bytes of the open file ``source``, a block at a
    time (a file that grew is cut at the size announced for it).

    :raises OSError: if it ends sooner (it shrank while read).
    """
    left = size
    while left > 0:
        data = source.read(min(BLOCK, left))
        if not data:
            raise OSError("%s shrank while read (%d of %d bytes)" % (path, size - left, size))
        left -= len(data)
        yield data


class Writer:
    """Writes one copy's entries under ``destination``, checked (see the
    module docstring); one file at a time, in the order given."""

    def __init__(self, destination: str, create_dirs: bool, sources: int) -> None:
        self.destination = destination
        self.into = prepare(destination, create_dirs, sources)
        self.dirs = []  # type: List[Tuple[str, int, float]]
        self.entry = None  # type: Optional[Tuple[Any, ...]]
        self.temporary = None  # type: Optional[str]
        self.file = None  # type: Any
        self.path = ""
        self.written = 0

    def directory(self, entry: "Tuple[Any, ...]") -> None:
        path = place(self.destination, self.into, entry[1])
        if path != self.destination and os.path.islink(path):
            raise UnsafeEntry(
                "refused entry %r: %s is a symlink, which could lead outside %s"
                % (entry[1], path, self.destination)
            )
        os.makedirs(path, exist_ok=True)
        self.dirs.append((path, entry[2], entry[3]))

    def begin(self, entry: "Tuple[Any, ...]") -> None:
        """Start the file of ``entry`` (from :func:`checked_entry`)."""
        self.path = place(self.destination, self.into, entry[1])
        fd, self.temporary = tempfile.mkstemp(
            prefix=".asyncgw-", suffix=".part", dir=os.path.dirname(self.path) or "."
        )
        self.file = os.fdopen(fd, "wb")
        self.entry = entry
        self.written = 0

    def write(self, data: "Any") -> None:
        entry = self.entry
        assert entry is not None and self.file is not None
        if not isinstance(data, bytes):
            raise UnsafeEntry("refused entry %r: %.200r among its bytes" % (entry[1], data))
        if self.written + len(data) > entry[4]:
            raise UnsafeEntry("refused entry %r: more than its %d bytes" % (entry[1], entry[4]))
        self.file.write(data)
        self.written += len(data)

    def end(self) -> None:
        """The file is complete: give it its mode and time, and its name."""
        entry, temporary = self.entry, self.temporary
        assert entry is not None and temporary is not None and self.file is not None
        if self.written != entry[4]:
            raise UnsafeEntry(
                "refused entry %r: %d of its %d bytes" % (entry[1], self.written, entry[4])
            )
        self.file.close()
        self.file = None
        os.chmod(temporary, entry[2])
        os.utime(temporary, (entry[3], entry[3]))
        os.replace(temporary, self.path)
        self.temporary = self.entry = None

    def finish(self) -> None:
        """Every entry arrived: directory modes and times, children first
        (writing into a directory moves its mtime)."""
        for path, mode, mtime in reversed(self.dirs):
            os.chmod(path, mode | 0o700)
            os.utime(path, (mtime, mtime))

    def abort(self) -> None:
        """Drop the file being written, if any (after a failure)."""
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.temporary is not None:
            try:
                os.unlink(self.temporary)
            except FileNotFoundError:
                pass
            self.temporary = self.entry = None


def _receive(channel: "Any", destination: str, create_dirs: bool, sources: int) -> None:
    writer = Writer(destination, create_dirs, sources)
    try:
        while True:
            item = channel.receive()
            if item is None:
                break
            entry = checked_entry(item, set_id=True)
            if entry[0] == "d":
                writer.directory(entry)
                continue
            writer.begin(entry)
            while True:
                data = channel.receive()
                if data is None:
                    break
                writer.write(data)
            writer.end()
        writer.finish()
    finally:
        writer.abort()


def _send(channel: "Any", paths: "List[str]") -> None:
    for entry in scan(paths):
        if entry[0] != "f":
            channel.send(entry)
            continue
        path = _source_path(paths, entry[1])
        with open(path, "rb") as source:  # opened first: an unreadable file is named alone
            size = os.fstat(source.fileno()).st_size
            channel.send((*entry[:4], size))
            for data in read_exactly(source, size, path):
                channel.send(data)
        channel.send(None)


def _source_path(paths: "List[str]", rel: str) -> str:
    top, _, rest = rel.partition("/")
    for path in paths:
        path = path.rstrip("/") or "/"
        if (os.path.basename(path) or path) == top:
            return os.path.join(path, *rest.split("/")) if rest else path
    raise FileNotFoundError(rel)


def serve(channel: "Any") -> None:
    request = channel.receive()
    error = None  # type: Optional[str]
    try:
        if request[0] == "put":
            _receive(channel, request[1], request[2], request[3])
        else:
            _send(channel, request[1])
    except (OSError, ValueError) as exc:  # ValueError: UnsafeEntry, a malformed stream
        error = "%s: %s" % (type(exc).__name__, exc)
    channel.send(("error", error) if error else ("done", None))


if __name__ == "__channelexec__":
    serve(channel)  # type: ignore[name-defined]  # noqa: F821
