"""What a fresh interpreter is sent to become a worker.

Two stages. The command line carries a tiny loader (``python -c LOADER``)
that reads a length-prefixed second stage from stdin and executes it; the
second stage installs ``_wire`` and the modules of ``remote/`` as modules
of a private package ``_asyncgw_remote`` (so an asyncgw installed remotely, of whatever
version, is never touched) and calls ``main(config)`` — of ``remote.worker``, or
of ``remote.forkserver`` for an interpreter that forks popen workers. Only the loader
crosses a shell, which keeps quoting trivial for ssh and cmd transports.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from .server import LOADER

__all__ = ["LOADER", "bootstrap_payload", "module_source", "python_argv"]

_PACKAGE = "_asyncgw_remote"

# The loader lives with the socket server, which must stand alone.
_STAGE2 = """\
import sys
def _package(name):
    package = type(sys)(name)
    package.__path__ = []
    sys.modules[name] = package
def _install(name, source):
    module = type(sys)(name)
    module.__package__ = name.rpartition('.')[0]
    module.__file__ = '<asyncgw ' + name + '>'
    sys.modules[name] = module
    exec(compile(source, module.__file__, 'exec'), module.__dict__)
_package({package!r})
_package({package!r} + '.remote')
{installs}{prelude}sys.modules[{package!r} + '.remote.' + {entry!r}].main({config!r})
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
    installs = "".join(
        f"_install({_PACKAGE + '.' + path.replace('/', '.')!r}, {module_source(path)!r})\n"
        for path in modules
    )
    stage2 = _STAGE2.format(
        package=_PACKAGE,
        installs=installs,
        entry="forkserver" if forkserver else "worker",
        config=config,
        prelude="" if nofile is None else _RESTORE_NOFILE.format(soft=int(nofile)),
    ).encode("utf-8")
    return b"%010d" % len(stage2) + stage2


def python_argv(python: list[str]) -> list[str]:
    """The argv that turns the interpreter command ``python`` (``["python3"]``,
    ``["uv", "run", "python"]``, ``["python3", "-X", "dev"]``) into a worker
    fed by ``bootstrap_payload``."""
    return [*python, "-c", LOADER]
