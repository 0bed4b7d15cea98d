"""The far side of the fleet's ``Put`` and ``Get`` through a gateway.

Shipped as source by ``gateway.remote_exec(this_module)`` and run with the
worker's blocking ``channel``: stdlib only, Python 3.9 syntax. The local
side imports :func:`place` and :func:`scan` from here too, so that both
sides lay out and read trees the same way.

Copies follow ``scp -r``: each source (a file or a directory tree) goes
*into* the destination if that is a directory (made first with
``create_dirs``), or *becomes* the destination if there is exactly one
source. Modes and modification times are kept.

Entries: ``("d", rel, mode, mtime)`` and ``("f", rel, mode, mtime,
size)``; ``rel`` is ``/``-separated and starts with the source's name.

Receiving (``put``), local side ``L``, this side ``R``::

    L: ("put", destination, create_dirs, sources)
    L: entry ... (a file entry is followed by its bytes, as bytes items,
       then None) ... then None
    R: ("done", None) or ("error", text)

Sending (``get``)::

    L: ("get", [path, ...])
    R: entry, its bytes and None per file, ..., then ("done", None) or
       ("error", text) (a path that cannot be read)
"""

import os
import stat
from typing import Any, Iterator, List, Tuple

#: Bytes per block read and sent.
BLOCK = 1024 * 1024


def place(destination: str, into: bool, rel: str) -> str:
    """Where entry ``rel`` goes: inside ``destination`` if ``into``, else
    with the source's own name replaced by ``destination``."""
    parts = rel.split("/")
    if into:
        return os.path.join(destination, *parts)
    return os.path.join(destination, *parts[1:])


def scan(paths: List[str]) -> Iterator[Tuple[Any, ...]]:
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


def _receive(channel: Any, destination: str, create_dirs: bool, sources: int) -> None:
    into = prepare(destination, create_dirs, sources)
    dirs = []  # type: List[Tuple[str, int, float]]
    while True:
        entry = channel.receive()
        if entry is None:
            break
        path = place(destination, into, entry[1])
        if entry[0] == "d":
            os.makedirs(path, exist_ok=True)
            dirs.append((path, entry[2], entry[3]))
            continue
        with open(path, "wb") as target:
            while True:
                data = channel.receive()
                if data is None:
                    break
                target.write(data)
        os.chmod(path, entry[2])
        os.utime(path, (entry[3], entry[3]))
    for path, mode, mtime in reversed(dirs):  # children first: writing into a dir moves its mtime
        os.chmod(path, mode | 0o700)
        os.utime(path, (mtime, mtime))


def _send(channel: Any, paths: List[str]) -> None:
    for entry in scan(paths):
        channel.send(entry)
        if entry[0] != "f":
            continue
        path = _source_path(paths, entry[1])
        with open(path, "rb") as source:
            while True:
                data = source.read(BLOCK)
                if not data:
                    break
                channel.send(data)
        channel.send(None)


def _source_path(paths: List[str], rel: str) -> str:
    top, _, rest = rel.partition("/")
    for path in paths:
        path = path.rstrip("/") or "/"
        if (os.path.basename(path) or path) == top:
            return os.path.join(path, *rest.split("/")) if rest else path
    raise FileNotFoundError(rel)


def serve(channel: Any) -> None:
    request = channel.receive()
    error = None  # type: str | None
    try:
        if request[0] == "put":
            _receive(channel, request[1], request[2], request[3])
        else:
            _send(channel, request[1])
    except OSError as exc:
        error = "%s: %s" % (type(exc).__name__, exc)
    channel.send(("error", error) if error else ("done", None))


if __name__ == "__channelexec__":
    serve(channel)  # type: ignore[name-defined]  # noqa: F821
