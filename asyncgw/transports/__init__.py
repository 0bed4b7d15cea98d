"""Transports: how a gateway reaches its interpreter. One module each.

``FACTORIES`` maps a spec's transport key to the coroutine that opens it.
"""

from __future__ import annotations

from .._errors import SpecError
from .._spec import XSpec
from ._base import StreamSink, Transport, TransportFactory
from .cmd import open_cmd
from .popen import open_popen

__all__ = ["FACTORIES", "StreamSink", "Transport", "TransportFactory", "factory_for"]

FACTORIES: dict[str, TransportFactory] = {
    "popen": open_popen,
    "cmd": open_cmd,
    "docker": open_cmd,
    "kubectl": open_cmd,
    "sudo": open_cmd,
}


def factory_for(spec: XSpec) -> TransportFactory:
    """The factory for ``spec``'s transport.

    :raises SpecError: if no transport of that name is available.
    """
    key = spec.transport
    try:
        return FACTORIES[key]
    except KeyError:
        raise SpecError(
            f"transport {key!r} of spec {str(spec)!r} is not available "
            f"(available: {sorted(FACTORIES)})"
        ) from None
