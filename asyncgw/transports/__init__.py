"""Transports: how a gateway reaches its interpreter. One module each.

``FACTORIES`` maps a spec's transport key to the coroutine that opens it.
Third parties add transports through the ``asyncgw.transports`` entry-point
group: the entry point's name is the spec key, its object a
:class:`TransportFactory`. Entry points are read on first need only, so
importing asyncgw stays cheap.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points

from .._errors import SpecError
from .._spec import XSpec
from ._base import OpenContext, StreamSink, Transport, TransportFactory
from .cmd import open_cmd
from .popen import open_popen
from .slurm import open_slurm
from .socket import open_socket
from .via import open_via

__all__ = [
    "ENTRY_POINT_GROUP",
    "FACTORIES",
    "OpenContext",
    "StreamSink",
    "Transport",
    "TransportFactory",
    "factory_for",
    "plugin_transports",
]


async def open_ssh(
    spec: XSpec, sink: StreamSink, bootstrap: bytes, context: OpenContext
) -> Transport:
    """The ssh transport, imported on first use: asyncssh (and cryptography)
    would otherwise cost every ``import asyncgw`` a good part of a second."""
    from .ssh import open_ssh

    return await open_ssh(spec, sink, bootstrap, context)


#: The built-in transports: a spec's transport key to the factory that
#: opens it (plug-ins come from :data:`ENTRY_POINT_GROUP`, never here).
FACTORIES: dict[str, TransportFactory] = {
    "popen": open_popen,
    "cmd": open_cmd,
    "docker": open_cmd,
    "kubectl": open_cmd,
    "sudo": open_cmd,
    "slurm": open_slurm,
    "via": open_via,
    "ssh": open_ssh,
    "socket": open_socket,
}


#: The entry-point group plug-in transports register in: the entry
#: point's name is the spec key, its object a :class:`TransportFactory`.
ENTRY_POINT_GROUP = "asyncgw.transports"


@functools.cache
def plugin_transports() -> dict[str, EntryPoint]:
    """Installed third-party transports by spec key (built-ins win a clash)."""
    return {
        entry.name: entry
        for entry in entry_points(group=ENTRY_POINT_GROUP)
        if entry.name not in FACTORIES
    }


def factory_for(spec: XSpec) -> TransportFactory:
    """The factory for ``spec``'s transport.

    :raises SpecError: if no transport of that name is available, or a
        plug-in's entry point cannot be loaded.
    """
    key = spec.transport
    if key in FACTORIES:
        return FACTORIES[key]
    entry = plugin_transports().get(key)
    if entry is None:
        raise SpecError(
            f"transport {key!r} of spec {str(spec)!r} is not available "
            f"(available: {sorted([*FACTORIES, *plugin_transports()])})"
        )
    try:
        factory: TransportFactory = entry.load()
    except Exception as exc:
        message = f"transport plug-in {entry.value!r} for {key!r} failed to load: {exc}"
        raise SpecError(message) from exc
    return factory
