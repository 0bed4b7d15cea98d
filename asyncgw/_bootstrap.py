"""What a fresh interpreter is sent to become a worker.

Two stages. The command line carries a tiny loader (``python -c LOADER``)
that reads a length-prefixed second stage from stdin and executes it; the
second stage installs ``_wire`` and ``_worker`` as modules of a private
package ``_asyncgw_remote`` (so an asyncgw installed remotely, of whatever
version, is never touched) and calls ``main(config)`` — of ``_worker``, or
of ``_forkserver`` for an interpreter that forks popen workers. Only the loader
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
def _install(name, source):
    module = type(sys)(name)
    module.__package__ = {package!r}
    module.__file__ = '<asyncgw ' + name + '>'
    sys.modules[name] = module
    exec(compile(source, module.__file__, 'exec'), module.__dict__)
    return module
_package = type(sys)({package!r})
_package.__path__ = []
sys.modules[{package!r}] = _package
_install({package!r} + '._wire', {wire!r})
_install({package!r} + '._worker', {worker!r})
{extra}sys.modules[{package!r} + '.' + {entry!r}].main({config!r})
"""


@functools.cache
def module_source(module: str) -> str:
    """The source text of one of the package's modules (read once)."""
    return (Path(__file__).parent / f"{module}.py").read_text(encoding="utf-8")


def bootstrap_payload(config: dict[str, Any], *, forkserver: bool = False) -> bytes:
    """The bytes to write to a fresh interpreter's stdin after ``LOADER``:
    they make it a worker, or with ``forkserver`` a fork server for workers."""
    extra = ""
    if forkserver:
        extra = f"_install({_PACKAGE!r} + '._forkserver', {module_source('_forkserver')!r})\n"
    stage2 = _STAGE2.format(
        package=_PACKAGE,
        wire=module_source("_wire"),
        worker=module_source("_worker"),
        extra=extra,
        entry="_forkserver" if forkserver else "_worker",
        config=config,
    ).encode("utf-8")
    return b"%010d" % len(stage2) + stage2


def python_argv(python: list[str]) -> list[str]:
    """The argv that turns the interpreter command ``python`` (``["python3"]``,
    ``["uv", "run", "python"]``, ``["python3", "-X", "dev"]``) into a worker
    fed by ``bootstrap_payload``."""
    return [*python, "-c", LOADER]
