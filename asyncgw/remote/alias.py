"""``import execnet`` in remote code, answered by the worker.

Installed when the caller aliased execnet to :mod:`asyncgw.sync` (as the
pytest-xdist plugin does), so that code written for execnet runs with
nothing installed on the far side. Stdlib only, shipped as source.
"""

from __future__ import annotations

import builtins
import sys

from .._wire import DataFormatError, DumpError, LoadError, dumps, loads
from .channel import Channel, RemoteError
from .execmodel import MAIN_THREAD_ONLY_DEADLOCK_TEXT, ExecModel, get_execmodel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["install_execnet_alias"]


def install_execnet_alias() -> None:
    """Make ``import execnet`` (and ``execnet.gateway_base``) in remote code
    give this worker's execnet API, so that code written for execnet — as
    pytest-xdist's worker side is — runs here with nothing installed:
    ``execnet.dumps`` to test that a value can travel, the error classes,
    the execmodels."""
    module = type(sys)("execnet")
    module.__doc__ = "execnet's remote-side names, answered by the asyncgw worker"
    names = {
        "Channel": Channel,
        "DataFormatError": DataFormatError,
        "DumpError": DumpError,
        "ExecModel": ExecModel,
        "LoadError": LoadError,
        "MAIN_THREAD_ONLY_DEADLOCK_TEXT": MAIN_THREAD_ONLY_DEADLOCK_TEXT,
        "RemoteError": RemoteError,
        "TimeoutError": builtins.TimeoutError,
        "dumps": dumps,
        "get_execmodel": get_execmodel,
        "loads": loads,
        "gateway_base": module,
    }
    for name, value in names.items():
        setattr(module, name, value)
    sys.modules["execnet"] = sys.modules["execnet.gateway_base"] = module
    # xdist hands its workers the caller's command line, where
    # `-p asyncgw.xdist` may stand: where asyncgw is not installed, that
    # import finds an empty plugin (last on the path: never a shadow).
    sys.meta_path.append(_StandInFinder())


class _StandInFinder:
    """Finds empty ``asyncgw`` and ``asyncgw.xdist`` modules, and nothing else."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in ("asyncgw", "asyncgw.xdist"):
            return None
        import importlib.machinery

        loader: Any = self
        return importlib.machinery.ModuleSpec(name, loader, is_package=name == "asyncgw")

    def create_module(self, spec: Any) -> None:
        return None  # the default module object

    def exec_module(self, module: Any) -> None:
        module.__doc__ = "stand-in: the caller's asyncgw plugin has nothing to do in a worker"
