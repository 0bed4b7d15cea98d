"""``import execnet`` answered by asyncgw: execnet's module layout over
:mod:`asyncgw.sync`.

:func:`install` makes ``execnet`` *be* :mod:`asyncgw.sync` in
``sys.modules`` and adds execnet's submodules that user code imports
names from (``execnet.gateway``, ``execnet.gateway_base``, ``execnet.multi``,
``execnet.xspec``, ``execnet.rsync``, ``execnet.gateway_bootstrap``), each
holding the asyncgw objects of execnet's public names. Internals that have
no counterpart here (``gateway_io``, ``WorkerPool``, ``_channelfactory``,
tracing) are absent on purpose: code reaching for them fails at import,
naming them, rather than running on a half-imitation.
"""

from __future__ import annotations

import sys
import types

__all__ = ["SUBMODULES", "install", "submodule"]

#: execnet's submodules and the names of :mod:`asyncgw.sync` (or of the
#: execmodel helpers) each one holds.
SUBMODULES: dict[str, tuple[str, ...]] = {
    "gateway": ("Gateway",),
    "gateway_base": (
        "Channel",
        "DataFormatError",
        "DumpError",
        "ExecModel",
        "LoadError",
        "MAIN_THREAD_ONLY_DEADLOCK_TEXT",
        "RemoteError",
        "TimeoutError",
        "dump",
        "dumps",
        "get_execmodel",
        "load",
        "loads",
    ),
    "gateway_bootstrap": ("HostNotFound",),
    "multi": ("Group", "MultiChannel", "default_group", "makegateway", "set_execmodel"),
    "rsync": ("RSync",),
    "xspec": ("XSpec",),
}

_made: dict[str, types.ModuleType] = {}


def submodule(name: str) -> types.ModuleType:
    """The stand-in for ``execnet.<name>`` (made once)."""
    module = _made.get(name)
    if module is None:
        from . import sync
        from .remote import execmodel

        module = types.ModuleType(f"execnet.{name}", f"execnet.{name}, answered by asyncgw.sync")
        for attribute in SUBMODULES[name]:
            # The execmodel helpers are the worker's own (shared by both sides).
            source = sync if hasattr(sync, attribute) else execmodel
            setattr(module, attribute, getattr(source, attribute))
        _made[name] = module
    return module


def install() -> types.ModuleType:
    """Make ``import execnet`` (and its submodules) give asyncgw's; return it.

    Idempotent. A real execnet imported before is replaced in
    ``sys.modules`` (objects already taken from it stay what they are).
    """
    from . import sync

    sys.modules["execnet"] = sync
    for name in SUBMODULES:
        sys.modules[f"execnet.{name}"] = submodule(name)
    return sync
