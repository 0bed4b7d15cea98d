"""``import execnet`` answered by asyncgw, for code that cannot be changed.

::

    import asyncgw.compat
    asyncgw.compat.install()
    import execnet            # asyncgw.sync, with execnet's submodules

:func:`install` makes ``execnet`` *be* :mod:`asyncgw.sync` in
``sys.modules`` and adds the stand-ins for execnet's submodules that user
code imports names from (``execnet.gateway``, ``execnet.gateway_base``,
``execnet.multi``, ``execnet.xspec``, ``execnet.rsync``,
``execnet.gateway_bootstrap``; see :mod:`asyncgw.sync.execnet_compat`).
Remote code then finds ``execnet`` too: groups made while it is installed
alias it in their workers. :func:`uninstall` puts back what was there.
pytest-xdist users load ``-p asyncgw.xdist``, which calls :func:`install`.
"""

from __future__ import annotations

import sys
import threading
import types

from . import sync
from .sync.execnet_compat import SUBMODULES, submodule

__all__ = ["install", "uninstall"]

_NAMES = ("execnet", *(f"execnet.{name}" for name in SUBMODULES))

#: What ``sys.modules`` held under execnet's names before :func:`install`
#: (None: nothing), to be put back by :func:`uninstall`.
_replaced: dict[str, types.ModuleType | None] | None = None
_lock = threading.Lock()


def install() -> types.ModuleType:
    """Make ``import execnet`` (and its submodules) give asyncgw's; return
    :mod:`asyncgw.sync`.

    Idempotent. A real execnet imported before is replaced in
    ``sys.modules`` (objects already taken from it stay what they are) and
    comes back with :func:`uninstall`.
    """
    global _replaced
    with _lock:
        if _replaced is None:
            _replaced = {name: sys.modules.get(name) for name in _NAMES}
        sys.modules["execnet"] = sync
        for name in SUBMODULES:
            sys.modules[f"execnet.{name}"] = submodule(name, sync)
    return sync


def uninstall() -> None:
    """Undo :func:`install`: ``execnet`` and its submodules are again what
    they were before it (not imported, or the real execnet). Does nothing
    if :func:`install` was not called. Groups made meanwhile keep aliasing
    execnet in their workers."""
    global _replaced
    with _lock:
        if _replaced is None:
            return
        for name, module in _replaced.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        _replaced = None
