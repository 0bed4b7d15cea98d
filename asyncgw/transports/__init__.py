"""Transports: how a gateway reaches its interpreter. One module each.

``FACTORIES`` maps a spec's transport key to the coroutine that opens it.
Third parties add transports through the ``asyncgw.transports`` entry-point
group: the entry point's name is the spec key, its object a
:class:`TransportFactory`. Entry points are read on first need only, so
importing asyncgw stays cheap.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .._bootstrap import bootstrap_payload
from .._errors import SpecError
from .._plugins import BUILTIN_TRANSPORTS, ENTRY_POINT_GROUP, plugin_transports
from .._spec import XSpec
from ._base import OpenContext, StreamSink, Transport, TransportFactory
from .cmd import open_cmd
from .popen import open_popen, open_popen_worker
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


BUILTIN_TRANSPORTS.update(FACTORIES)  # they win a clash with a plug-in (plugin_transports)


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


# Not in __all__: the core's own entry (``open_gateway`` calls it); plug-ins
# are factories, called by it.
async def open_transport(
    spec: XSpec, sink: StreamSink, config: dict[str, Any], context: OpenContext
) -> Transport:
    """Start the worker of ``config`` over ``spec``'s transport and return
    the stream to it, connected (its greeting is ``sink``'s to wait for).
    How it gets there is the transport's business: popen forks from
    ``context.forkservers`` when it can; every other transport is handed
    the bootstrap of ``config``. Cancelling kills what was started.

    :raises SpecError: for a spec no transport serves.
    :raises HostNotFound: if the interpreter or host cannot be reached.
    """
    factory = factory_for(spec)
    context = dataclasses.replace(context, config=config)
    if factory is open_popen:
        return await open_popen_worker(spec, sink, context)
    return await factory(spec, sink, bootstrap_payload(config), context)
