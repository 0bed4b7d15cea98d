"""``execnet`` for running execnet's own tests on asyncgw (harness only).

``import execnet`` gives :mod:`asyncgw.sync` through asyncgw's alias. The
test modules also import a few execnet internals at module level
(``gateway_io.popen_args``, ``gateway_base.WorkerPool``,
``multi.safe_terminate``, tracing): asyncgw has no such things, so they are
placeholders that raise ``NotImplementedError`` when used. The tests of
those internals therefore fail, and are listed as such; without the
placeholders the modules around them could not even be collected.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import asyncgw.compat

asyncgw.compat.install()


class _Internal:
    def __init__(self, name: str) -> None:
        self._name = name

    def _refuse(self) -> NotImplementedError:
        return NotImplementedError(f"{self._name} is an execnet internal; asyncgw has none")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refuse()

    def __getattr__(self, attribute: str) -> Any:
        raise self._refuse()


def _placeholders(module_name: str, names: list[str]) -> None:
    module = sys.modules.get(module_name)
    if module is None:
        module = sys.modules[module_name] = types.ModuleType(module_name)
        # `from execnet import gateway_io` looks for an attribute first.
        setattr(sys.modules["execnet"], module_name.rpartition(".")[2], module)
    for name in names:
        if not hasattr(module, name):
            setattr(module, name, _Internal(f"{module_name}.{name}"))


_placeholders(
    "execnet.gateway_io",
    ["Popen2IOMaster", "popen_args", "popen_bootstrapline", "ssh_args", "vagrant_ssh_args"],
)
_placeholders("execnet.gateway_base", ["WorkerPool", "notrace", "trace"])
_placeholders("execnet.multi", ["safe_terminate"])
