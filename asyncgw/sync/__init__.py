"""The blocking facade: execnet's API over the async core.

``import asyncgw.sync as execnet`` runs execnet-style code unchanged::

    group = execnet.Group(["popen"] * 2)          # members start in parallel
    channel = group[0].remote_exec("channel.send(channel.receive() + 1)")
    channel.send(1)
    assert channel.receive() == 2
    group.terminate(timeout=1.0)

Every method runs the async implementation on one event-loop thread per
process (:mod:`asyncgw._loopthread`); nothing here decides anything the
core does not. Works the same from scripts, REPLs, threads and Jupyter
kernels (whose main thread runs a loop of its own: we never block *our*
loop's thread).

Its modules mirror the async layers, each a blocking twin made the same
way (it owns the async object and runs it on the loop thread), each
importing only the modules listed before it:

- :mod:`~asyncgw.sync.channel`: :class:`Channel`, :class:`MultiChannel`;
- :mod:`~asyncgw.sync.objects`: blocking proxies, :func:`fetch`;
- :mod:`~asyncgw.sync.gateway`: :class:`Gateway`;
- :mod:`~asyncgw.sync.group`: :class:`Group`, :func:`makegateway`;
- :mod:`~asyncgw.sync.serializer`: :func:`dump`, :func:`load`;
- :mod:`~asyncgw.sync.files`: :class:`RSync`;
- :mod:`~asyncgw.sync.pool`: :class:`Executor`;
- :mod:`~asyncgw.sync.fleet`: execo's actions (:class:`Remote`, ...);
- :mod:`~asyncgw.sync.execnet_compat`: execnet's submodules, for
  :func:`asyncgw.compat.install`.

The objects, files, pool and fleet twins are imported on first use (module
``__getattr__``): execnet-style code, pytest-xdist's among it, never pays
for what it does not use (asyncssh above all). ``tests/test_sync_imports.py``
holds that line.
"""

from __future__ import annotations

import sys
from typing import Any

from .. import __version__
from .._errors import (
    DataFormatError,
    DumpError,
    HostNotFound,
    LoadError,
    RemoteError,
    TimeoutError,
)
from .._spec import XSpec
from .channel import NO_ENDMARKER as NO_ENDMARKER
from .channel import Channel, MultiChannel
from .gateway import Gateway
from .group import Group, default_group, makegateway, set_execmodel
from .serializer import dump, dumps, load, loads

#: execnet 2.1's public names, exactly (NO_ENDMARKER and the like stay
#: importable by name).
__all__ = [
    "Channel",
    "DataFormatError",
    "DumpError",
    "Gateway",
    "Group",
    "HostNotFound",
    "LoadError",
    "MultiChannel",
    "RSync",
    "RemoteError",
    "TimeoutError",
    "XSpec",
    "__version__",
    "default_group",
    "dump",
    "dumps",
    "load",
    "loads",
    "makegateway",
    "set_execmodel",
]

# The names imported on first use, by the module of this package that holds them.
_FLEET_TWINS = frozenset(
    {"Action", "Get", "Local", "ParallelActions", "Put", "Remote", "SequentialActions"}
)
_FLEET_SHARED = frozenset(
    {"Host", "Report", "default_connection_params", "expand", "fold", "get_hosts_list"}
)
_OBJECTS = frozenset({"fetch"})
_FILES = frozenset({"RSync"})
_POOL = frozenset({"Executor"})


def __getattr__(name: str) -> Any:
    # Each branch imports its twin only now (see the module's docstring).
    if name in _FILES:
        from . import files

        return getattr(files, name)
    if name in _POOL:
        from . import pool

        return getattr(pool, name)
    if name in _OBJECTS:
        from . import objects

        return getattr(objects, name)
    if name in _FLEET_TWINS:
        from . import fleet

        return getattr(fleet, name)
    if name in _FLEET_SHARED:
        from .. import fleet as _async_fleet

        return getattr(_async_fleet, name)
    # execnet's submodules (execnet.gateway_base, ...), for code that reaches
    # them through the package once `execnet` is this module.
    from .execnet_compat import SUBMODULES, submodule

    if name in SUBMODULES:
        return submodule(name, sys.modules[__name__])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    lazy = _FILES | _POOL | _OBJECTS | _FLEET_TWINS | _FLEET_SHARED
    return sorted(set(globals()) | lazy)
