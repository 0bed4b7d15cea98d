"""Serving the caller's own modules to remote imports: the local side of
import forwarding.

With ``forward_imports=a,b`` (spec key, or ``Group(forward_imports=[...])``)
a gateway ships :mod:`asyncgw.remote.importer` when it starts: remote code
that imports ``a`` or ``a.x`` and does not find it there gets it from
here, module by module, as source. An entry ``!a`` also *shadows*: the
remote asks here first, even for a module it has. See
``docs/forwarding.rst``.

Invariants: only modules under the allowed top-level names are served,
whatever the remote asks; only pure-Python source (extension modules,
built-in and compiled-only modules are refused with the reason); finding a
module runs none of its code here (finders are asked directly, the parent
package is never imported for a submodule's sake), and the files are read
in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import logging
import sys
import weakref
from collections.abc import Collection, Iterable
from typing import Any

# From the core's modules, not the package root: the root imports this
# layer (to register its services), so importing the root back is a circle.
from .._channel import Channel
from .._errors import ChannelError, GatewayError
from .._gateway import Gateway
from ..remote import importer as _remote

__all__ = [
    "ImportServer",
    "find_module_source",
    "import_server",
    "parse_names",
    "start_import_forwarding",
]

#: ``("module", source, filename or None, is_package)``, ``("missing",
#: reason)`` (the remote's next finder is asked) or ``("refused", reason)``
#: (the remote import raises ``ImportError`` with the reason).
Answer = tuple[Any, ...]

log = logging.getLogger(__name__)

_SERVERS: weakref.WeakKeyDictionary[Gateway, ImportServer] = weakref.WeakKeyDictionary()


def parse_names(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """The allowed and the shadowed top-level names of ``forward_imports``
    entries (``"!name"`` allows and shadows ``name``).

    :raises ValueError: for an entry that is not a top-level module name.
    """
    allowed: list[str] = []
    shadowed: list[str] = []
    for entry in names:
        entry = entry.strip()
        name = entry.removeprefix("!")
        if not name.isidentifier():
            raise ValueError(
                f"forward_imports: {entry!r} is not a top-level module name "
                "(a package's submodules come with it)"
            )
        if name not in allowed:
            allowed.append(name)
        if entry.startswith("!") and name not in shadowed:
            shadowed.append(name)
    return allowed, shadowed


def find_module_source(fullname: str, allowed: Collection[str]) -> Answer:
    """What to answer a remote request for ``fullname`` (blocking: it reads
    the file)."""
    if not isinstance(fullname, str) or not all(p.isidentifier() for p in fullname.split(".")):
        return ("refused", f"{fullname!r} is not a module name")
    top = fullname.partition(".")[0]
    if top not in allowed:
        listed = ", ".join(sorted(allowed)) or "none"
        return ("refused", f"{top!r} is not among the names forwarded here ({listed})")
    try:
        spec = _find_spec(fullname)
    except Exception as exc:  # a finder failed: that is the reason
        return ("refused", f"finding it failed here: {exc!r}")
    if spec is None:
        return ("missing", f"no module named {fullname!r} here either")
    if spec.origin is None and spec.submodule_search_locations is not None:
        return ("module", "", None, True)  # a namespace package
    loader = spec.loader
    origin = spec.origin or ""
    if isinstance(loader, importlib.machinery.ExtensionFileLoader) or origin.endswith(
        tuple(importlib.machinery.EXTENSION_SUFFIXES)
    ):
        return ("refused", f"{fullname} is an extension module ({origin}); only Python source is")
    if origin in ("built-in", "frozen"):
        return ("refused", f"{fullname} is {origin} here; only Python source is forwarded")
    get_source = getattr(loader, "get_source", None)
    try:
        source = get_source(fullname) if get_source is not None else None
    except (ImportError, OSError, UnicodeDecodeError) as exc:
        return ("refused", f"the source of {fullname} cannot be read here: {exc}")
    if source is None:
        return ("refused", f"{fullname} has no source here ({origin or 'compiled only'})")
    filename = spec.origin if spec.has_location else None
    return ("module", source, filename, spec.submodule_search_locations is not None)


def _find_spec(fullname: str) -> importlib.machinery.ModuleSpec | None:
    """``importlib.util.find_spec`` without importing the parents: each
    finder is asked directly, with the parent's search locations."""
    parts = fullname.split(".")
    path: Any = None
    spec: importlib.machinery.ModuleSpec | None = None
    for index in range(len(parts)):
        name = ".".join(parts[: index + 1])
        module = sys.modules.get(name)
        spec = getattr(module, "__spec__", None) if module is not None else None
        if spec is None:
            spec = _ask_finders(name, path)
        if spec is None:
            return None
        if index < len(parts) - 1:  # a parent: its search locations
            path = getattr(module, "__path__", None) if module is not None else None
            if path is None:
                path = spec.submodule_search_locations
            if path is None:
                return None  # not a package
    return spec


def _ask_finders(name: str, path: Any) -> importlib.machinery.ModuleSpec | None:
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is not None:
            spec = find_spec(name, path)
            if spec is not None:
                return spec  # type: ignore[no-any-return]
    return None


def import_server(gateway: Gateway) -> ImportServer | None:
    """The server of ``gateway``'s forwarded imports, if it has one."""
    return _SERVERS.get(gateway)


async def start_import_forwarding(gateway: Gateway, names: Iterable[str]) -> ImportServer:
    """Let ``gateway``'s imports of ``names`` (top-level names; ``"!name"``
    to shadow the remote's own) fetch modules from here (``open_gateway``
    does it for gateways with ``forward_imports``).

    :raises ValueError: for an entry that is not a top-level module name.
    :raises RuntimeError: if the gateway forwards its imports already.
    :raises RemoteError: if the remote side could not be set up.
    :raises GatewayLost: if the gateway is gone.

    Cancelling may leave the remote finders installed: the caller kills
    the gateway (as ``open_gateway`` does on any failure).
    """
    allowed, shadowed = parse_names(names)
    if gateway in _SERVERS:
        raise RuntimeError(f"gateway {gateway.id!r} forwards its imports already")
    setup = gateway.remote_exec(_remote)
    await setup.send({"names": allowed, "shadow": shadowed})
    channel = await setup.receive()
    await setup.waitclose()
    server = ImportServer(gateway, channel, allowed, shadowed)
    _SERVERS[gateway] = server
    return server


class ImportServer:
    """Answers one gateway's module requests. Made by
    :func:`start_import_forwarding`."""

    def __init__(
        self, gateway: Gateway, channel: Channel, allowed: list[str], shadowed: list[str]
    ) -> None:
        self.gateway_id = gateway.id
        # Dropped at the end, so that the gateway (which the channel names)
        # can go: this object is the value of a weak-keyed table.
        self._channel: Channel | None = channel
        #: The top-level names served, and those of them that shadow.
        self.allowed = list(allowed)
        self.shadowed = list(shadowed)
        #: Every name the remote asked for, in order.
        self.requested: list[str] = []
        #: Names served, and names refused with the reason.
        self.served: list[str] = []
        self.refused: dict[str, str] = {}
        #: Set once serving has ended (the gateway went).
        self.ended = asyncio.Event()
        self._task = asyncio.create_task(self._serve(), name=f"asyncgw imports of {gateway.id}")

    def __repr__(self) -> str:
        return f"<ImportServer {self.gateway_id!r} {self.allowed} served={len(self.served)}>"

    async def _serve(self) -> None:
        channel = self._channel
        assert channel is not None
        try:
            async for request in channel:
                ident, fullname = _parse_request(request)
                self.requested.append(str(fullname))
                answer = await asyncio.to_thread(find_module_source, fullname, self.allowed)
                if answer[0] == "module":
                    self.served.append(fullname)
                    log.debug("%s: serving %s", self.gateway_id, fullname)
                else:
                    self.refused[str(fullname)] = answer[1]
                    log.debug("%s: not serving %s: %s", self.gateway_id, fullname, answer[1])
                await channel.send((ident, answer))
        except (ChannelError, GatewayError):
            pass  # the gateway went
        except Exception:
            log.exception("import forwarding of %s failed", self.gateway_id)
            channel.close("import forwarding failed here")
        finally:
            self._channel = None
            self.ended.set()


def _parse_request(request: object) -> tuple[int, Any]:
    """``(id, name)`` of a request; a malformed one gets id 0 (and the
    name it has, which ``find_module_source`` refuses)."""
    if isinstance(request, tuple | list) and len(request) == 2 and isinstance(request[0], int):
        return request[0], request[1]
    return 0, request
