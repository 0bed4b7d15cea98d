"""The one error tree of asyncgw::

    AsyncgwError
     ├─ GatewayError          could not start, or lost
     │   ├─ HostNotFound
     │   ├─ AuthenticationError
     │   ├─ HostKeyError
     │   ├─ BootstrapError
     │   └─ GatewayLost       (also EOFError, OSError)
     ├─ ChannelError
     │   ├─ ChannelClosed     end of stream (also EOFError)
     │   ├─ ChannelIOError    send on a closed channel, ... (also OSError)
     │   └─ RemoteError       remote code raised; .formatted
     ├─ ProtocolError         bad frame on the wire
     ├─ DataFormatError
     │   ├─ DumpError         (also TypeError)
     │   └─ LoadError         (also ValueError)
     ├─ SpecError             (also ValueError)
     └─ TimeoutError          (also the builtin TimeoutError)

The wire-level classes live in ``_wire`` because that module is shipped to
remote interpreters without the rest of the package; they are re-exported
here so that this module is the one place to look.
"""

from __future__ import annotations

import builtins

from ._wire import AsyncgwError, DataFormatError, DumpError, LoadError, ProtocolError

__all__ = [
    "AsyncgwError",
    "AuthenticationError",
    "BootstrapError",
    "ChannelClosed",
    "ChannelError",
    "ChannelIOError",
    "DataFormatError",
    "DumpError",
    "GatewayError",
    "GatewayLost",
    "HostKeyError",
    "HostNotFound",
    "LoadError",
    "ProtocolError",
    "RemoteError",
    "SpecError",
    "TimeoutError",
]


class GatewayError(AsyncgwError):
    """Raised when a gateway cannot be started or has been lost.

    :ivar gateway_id: the id of the gateway concerned, when known.
    """

    def __init__(self, message: str, gateway_id: str | None = None) -> None:
        super().__init__(message)
        self.gateway_id = gateway_id


class HostNotFound(GatewayError):
    """Raised by ``makegateway`` when the host or interpreter cannot be reached
    (for popen: the ``python=`` executable does not exist)."""


class AuthenticationError(GatewayError):
    """Raised by ``makegateway`` when a host refused our credentials."""


class HostKeyError(GatewayError):
    """Raised by ``makegateway`` when a host's key could not be verified
    against the known hosts (unknown, or changed)."""


class BootstrapError(GatewayError):
    """Raised by ``makegateway`` when the interpreter started but did not come
    up as an asyncgw worker: it exited, printed something else, spoke another
    protocol version, or did not answer within the timeout."""


class GatewayLost(GatewayError, EOFError, OSError):
    """Raised by channel operations once the remote interpreter has gone
    (killed, crashed, exited, stream closed) — at once, never after a hang.
    As execnet's errors for a channel whose gateway went away, it is an
    ``EOFError`` (for ``receive``) and an ``OSError`` (for ``send``)."""


class ChannelError(AsyncgwError):
    """Raised for errors that concern one channel."""


class ChannelClosed(ChannelError, EOFError):
    """Raised by ``receive`` at the end of the stream (the channel was closed
    and every value sent before that was received). It is an ``EOFError``,
    as in execnet."""


class ChannelIOError(ChannelError, OSError):
    """Raised by ``send`` on a channel that is closed (by either side), and
    by ``receive`` on a channel whose values go to a callback. It is an
    ``OSError`` (``IOError``), as execnet raises for both."""


class RemoteError(ChannelError):
    """Raised when remote code failed: by ``receive`` once the values sent
    before the failure are consumed, and by ``waitclose``.

    :ivar formatted: the remote traceback, formatted on the remote side.
    :ivar typename: the remote exception's type name, where known (remote
        objects' calls), else ``None``.
    """

    def __init__(self, formatted: str, typename: str | None = None) -> None:
        super().__init__(formatted)
        self.formatted = formatted
        self.typename = typename

    def __str__(self) -> str:
        return self.formatted

    def __repr__(self) -> str:
        last = self.formatted.strip().splitlines()[-1:] or [""]
        return f"RemoteError({last[0]!r})"


class SpecError(AsyncgwError, ValueError):
    """Raised by ``XSpec`` and ``makegateway`` for a malformed spec; the message
    names the offending key."""


class TimeoutError(AsyncgwError, builtins.TimeoutError):
    """Raised when an operation given a ``timeout`` did not complete in time."""
