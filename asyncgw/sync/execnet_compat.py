"""execnet's module layout over :mod:`asyncgw.sync`: the stand-ins for
``execnet.gateway``, ``execnet.gateway_base``, ``execnet.multi``,
``execnet.xspec``, ``execnet.rsync`` and ``execnet.gateway_bootstrap``.

Each stand-in holds the asyncgw objects of the names that execnet's
submodule makes public, taken from the facade module it is given (so that
a name the facade imports on first use, ``RSync``, is imported only when
its stand-in is made). Internals that have no counterpart here
(``gateway_io``, ``WorkerPool``, ``_channelfactory``, tracing) are absent
on purpose: code reaching for them fails at import, naming them, rather
than running on a half-imitation. :func:`asyncgw.compat.install` puts the
facade and these stand-ins in ``sys.modules`` under execnet's names.
"""

from __future__ import annotations

import threading
import types

from ..remote import execmodel

__all__ = ["SUBMODULES", "submodule"]

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
_made_lock = threading.Lock()


def submodule(name: str, facade: types.ModuleType) -> types.ModuleType:
    """The stand-in for ``execnet.<name>``, holding names of ``facade``
    (:mod:`asyncgw.sync`); made once.

    :raises KeyError: for a submodule not in :data:`SUBMODULES`.
    """
    own = vars(facade).get(name)
    if isinstance(own, types.ModuleType):
        # The facade's own module of that name (execnet.gateway is
        # asyncgw.sync.gateway): one object, whichever way it is reached.
        return own
    with _made_lock:
        module = _made.get(name)
        if module is None:
            module = types.ModuleType(
                f"execnet.{name}", f"execnet.{name}, answered by asyncgw.sync"
            )
            for attribute in SUBMODULES[name]:
                # The execmodel helpers are the worker's own (shared by both sides).
                source = facade if hasattr(facade, attribute) else execmodel
                setattr(module, attribute, getattr(source, attribute))
            _made[name] = module
        return module
