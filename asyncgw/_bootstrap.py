"""What a fresh interpreter is sent to become a worker.

Two stages. The command line carries a tiny loader (``python -c LOADER``)
that reads a length-prefixed second stage from stdin and executes it; the
second stage reads the sources that follow it (raw UTF-8, so that they
are not compiled as string literals when the far side's code cache has
them), installs ``_wire`` and the modules of ``remote/`` as modules
of a private package ``_asyncgw_remote`` (so an asyncgw installed remotely, of whatever
version, is never touched) and calls ``main(config)`` — of ``remote.worker``, or
of ``remote.forkserver`` for an interpreter that forks popen workers. Only the loader
crosses a shell, which keeps quoting trivial for ssh and cmd transports.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from .server import LOADER

__all__ = ["LOADER", "bootstrap_payload", "module_source", "python_argv"]

_PACKAGE = "_asyncgw_remote"

# The loader lives with the socket server, which must stand alone.
#
# Compiling the worker's modules costs about half a bare interpreter's
# start, so stage 2 keeps their code objects (marshal) in a private cache
# on the far side, keyed by a hash of the sources (computed here) and the
# far interpreter's exact version and optimisation level (checked there),
# and compiles only on a miss. The cache directory is
# $XDG_CACHE_HOME/asyncgw (default ~/.cache/asyncgw); it is used only if it
# is a real directory owned by this user with no access for others (mode
# 700, created so), opened once and then used through its descriptor, so
# that nobody else can plant code there; files are written under a
# temporary name and renamed, so a reader never sees half a file. Any
# failure (read-only home, no dir_fd support, a bad file) means: compile.
# Nothing is written under dont_write_bytecode (the config, -B or
# PYTHONDONTWRITEBYTECODE), as for .pyc files; a cache there is still read.
_STAGE2 = """\
import os
import sys
import marshal
def _take(size):
    chunks = []
    while size:
        chunk = os.read(0, min(size, 1 << 20))
        if not chunk:
            raise SystemExit('asyncgw: bootstrap input ended early')
        chunks.append(chunk)
        size -= len(chunk)
    return b''.join(chunks)
_sources = _take({sources_size!r})
def _package(name):
    package = type(sys)(name)
    package.__path__ = []
    sys.modules[name] = package
def _cache_dir():
    if os.open not in os.supports_dir_fd:
        return None
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    path = os.path.join(base, 'asyncgw')
    try:
        os.makedirs(path, 0o700)
    except OSError:
        pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    info = os.fstat(fd)
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        os.close(fd)
        return None
    return fd
def _cache_read(fd, name, tag):
    try:
        handle = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
    except OSError:
        return None
    try:
        with open(handle, 'rb') as file:
            found_tag, codes = marshal.loads(file.read())
    except Exception:
        return None
    return codes if found_tag == tag and type(codes) is dict else None
def _cache_write(fd, name, tag, codes):
    temp = '%s.%d.tmp' % (name, os.getpid())
    try:
        handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                         dir_fd=fd)
        with open(handle, 'wb') as file:
            file.write(marshal.dumps((tag, codes)))
        os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except Exception:
        try:
            os.unlink(temp, dir_fd=fd)
        except OSError:
            pass
_tag = (sys.version, sys.flags.optimize)
_name = {key!r} + '-' + sys.implementation.cache_tag
try:
    _fd = _cache_dir()
except Exception:
    _fd = None
_codes = (_fd is not None and _cache_read(_fd, _name, _tag)) or {{}}
_compiled = {{}}
def _install(name, start, end):
    module = type(sys)(name)
    module.__package__ = name.rpartition('.')[0]
    module.__file__ = '<asyncgw ' + name + '>'
    sys.modules[name] = module
    code = _codes.get(name)
    if code is None:
        code = _compiled[name] = compile(_sources[start:end], module.__file__, 'exec')
    exec(code, module.__dict__)
_package({package!r})
_package({package!r} + '.remote')
{installs}if _fd is not None:
    if _compiled and not {no_write!r} and not sys.flags.dont_write_bytecode:
        _cache_write(_fd, _name, _tag, _compiled)
    os.close(_fd)
del _sources, _codes, _compiled
{prelude}sys.modules[{package!r} + '.remote.' + {entry!r}].main({config!r})
"""

# Sets the soft RLIMIT_NOFILE back to what it was before asyncgw raised it
# here (see _fdlimit): a local worker's code then sees the usual limit.
_RESTORE_NOFILE = """\
try:
    import resource
    resource.setrlimit(resource.RLIMIT_NOFILE,
                       ({soft}, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
except (ImportError, ValueError, OSError):
    pass
"""

#: The modules a worker is made of, in import order (paths in the package).
WORKER_MODULES = (
    "_wire",
    "remote/execmodel",
    "remote/channel",
    "remote/alias",
    "remote/reading",
    "remote/worker",
)


@functools.cache
def module_source(module: str) -> str:
    """The source text of one of the package's modules (read once)."""
    return (Path(__file__).parent / f"{module}.py").read_text(encoding="utf-8")


@functools.cache
def _sources_key(modules: tuple[str, ...]) -> str:
    """What names one set of module sources in the far side's code cache."""
    digest = hashlib.sha256()
    for path in modules:
        digest.update(b"%s\0%s\0" % (path.encode(), module_source(path).encode("utf-8")))
    return digest.hexdigest()[:32]


@functools.cache
def _sources(modules: tuple[str, ...]) -> tuple[str, bytes]:
    """The install lines of stage 2 for ``modules`` and the sources they
    slice, built once per set of modules."""
    installs, blob = [], b""
    for path in modules:
        source = module_source(path).encode("utf-8")
        name = _PACKAGE + "." + path.replace("/", ".")
        installs.append(f"_install({name!r}, {len(blob)}, {len(blob) + len(source)})\n")
        blob += source
    return "".join(installs), blob


def bootstrap_payload(
    config: dict[str, Any], *, forkserver: bool = False, nofile: int | None = None
) -> bytes:
    """The bytes to write to a fresh interpreter's stdin after ``LOADER``:
    they make it a worker, or with ``forkserver`` a fork server for workers.

    :param nofile: a soft ``RLIMIT_NOFILE`` for the interpreter to set
        before it starts (a fork server's workers inherit it); None: leave
        the inherited one.
    """
    modules = WORKER_MODULES + (("remote/forkserver",) if forkserver else ())
    installs, sources = _sources(modules)
    stage2 = _STAGE2.format(
        package=_PACKAGE,
        sources_size=len(sources),
        installs=installs,
        key=_sources_key(modules),
        no_write=bool(config.get("dont_write_bytecode")),
        entry="forkserver" if forkserver else "worker",
        config=config,
        prelude="" if nofile is None else _RESTORE_NOFILE.format(soft=int(nofile)),
    ).encode("utf-8")
    return b"%010d" % len(stage2) + stage2 + sources


def python_argv(python: list[str]) -> list[str]:
    """The argv that turns the interpreter command ``python`` (``["python3"]``,
    ``["uv", "run", "python"]``, ``["python3", "-X", "dev"]``) into a worker
    fed by ``bootstrap_payload``."""
    return [*python, "-c", LOADER]
