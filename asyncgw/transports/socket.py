"""socket: a worker served by an asyncgw socket server (``asyncgw.server``).

``socket=host:port`` connects, answers the server's challenge with the
shared secret (``socket_secret_file=PATH``, else ``ASYNCGW_SECRET`` in our
environment) and, once admitted, speaks to a fresh worker over the same
TCP stream. Killing closes the connection; the worker exits at end of
input. ``socket//installvia=gw0`` first starts a server through gateway
``gw0`` (on a free loopback port, with a fresh secret), as execnet does.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from typing import TYPE_CHECKING, cast

from .._bootstrap import module_source
from .._errors import AuthenticationError, HostNotFound, SpecError
from ..server import CHALLENGE, answer
from ._base import OpenContext, StreamSink, Transport
from .pipereader import read_buffer

if TYPE_CHECKING:
    from .._spec import XSpec

__all__ = ["SocketTransport", "open_socket"]


class _Protocol(asyncio.BufferedProtocol):
    """Handshake lines first, then every byte to the sink. Received into the
    thread's one read buffer (see :mod:`.pipereader` for why)."""

    def __init__(self, sink: StreamSink, secret: bytes) -> None:
        self.sink = sink
        self.secret = secret
        self.buffer = b""
        self.admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always an asyncio.Transport
        # subclass (uvloop's TCPTransport is not).
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return read_buffer()  # filled, then handed to buffer_updated at once

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(read_buffer()[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        if self.admitted.done():
            self.sink.data_received(data)
            return
        self.buffer += data
        while b"\n" in self.buffer and not self.admitted.done():
            line, _, self.buffer = self.buffer.partition(b"\n")
            self._handshake(line.strip())
        if self.admitted.done() and self.buffer:
            rest, self.buffer = self.buffer, b""
            self.sink.data_received(rest)

    def _handshake(self, line: bytes) -> None:
        assert self.transport is not None
        if line.startswith(CHALLENGE.strip()):
            nonce = line[len(CHALLENGE) :].decode("ascii", "replace")
            try:
                self.transport.write(answer(self.secret, nonce).encode() + b"\n")
            except ValueError:
                self.admitted.set_exception(HostNotFound(f"bad challenge {line[:80]!r}"))
        elif line == b"OK":
            self.admitted.set_result(None)
        elif line == b"DENIED":
            self.admitted.set_exception(AuthenticationError("the server refused our secret"))
        else:
            self.admitted.set_exception(
                HostNotFound(f"not an asyncgw socket server: it said {line[:80]!r}")
            )

    def pause_writing(self) -> None:
        self.sink.pause_writing()

    def resume_writing(self) -> None:
        self.sink.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted.done():
            self.admitted.set_exception(HostNotFound("the server closed the connection"))
        self.sink.connection_lost("the socket connection closed")
        if not self.closed.done():
            self.closed.set_result(None)


class SocketTransport(Transport):
    def __init__(self, address: str, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._address = address
        self._transport = transport
        self._protocol = protocol

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def close_input(self) -> None:
        if self._transport.can_write_eof() and not self._transport.is_closing():
            self._transport.write_eof()

    def diagnosis(self) -> str:
        return f"socket {self._address}"

    async def wait_closed(self) -> None:
        await asyncio.shield(self._protocol.closed)

    async def kill(self) -> None:
        self._transport.abort()
        await asyncio.shield(self._protocol.closed)


def _split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) into its parts; ``("", 0)`` if malformed."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return "", 0
    return host.strip("[]"), int(port)


def _secret(spec: XSpec) -> bytes:
    if spec.socket_secret_file:
        with open(os.path.expanduser(spec.socket_secret_file), "rb") as stream:
            return stream.read().strip()
    secret = os.environ.get("ASYNCGW_SECRET")
    if not secret:
        raise SpecError(
            f"spec {str(spec)!r} needs a secret: key 'socket_secret_file', "
            "or ASYNCGW_SECRET in the environment"
        )
    return secret.encode()


#: Appended to the server's own source when a gateway installs it: listen
#: on a free port, report it, serve until our channel closes.
_INSTALLED = """
import socket as _socket, sys as _sys, threading as _threading
_host, _secret = channel.receive()
_listener = _socket.create_server((_host, 0))
_threading.Thread(
    target=serve_forever, args=(_listener, _secret, _sys.executable), daemon=True
).start()
channel.send(_listener.getsockname()[1])
try:
    channel.receive()
except EOFError:
    pass
_listener.close()
"""


async def _install_server(spec: XSpec, context: OpenContext) -> tuple[str, bytes]:
    """Start a socket server through the gateway ``spec.installvia`` (on a
    free port, with a fresh secret) and return its address and secret. The
    server lives as long as that gateway, or until the channel closes."""
    group = context.group
    if group is None or spec.installvia not in group:
        raise SpecError(f"spec {str(spec)!r}: no gateway {spec.installvia!r} to install via")
    assert spec.installvia is not None
    host = "127.0.0.1" if spec.socket in (None, True) else str(spec.socket).rpartition(":")[0]
    secret = secrets.token_hex(32).encode()
    source = module_source("server") + _INSTALLED
    channel = group[spec.installvia].remote_exec(source)
    await channel.send((host, secret))
    port = await channel.receive()
    return f"{host}:{port}", secret


async def open_socket(
    spec: XSpec, sink: StreamSink, bootstrap: bytes, context: OpenContext
) -> SocketTransport:
    """Connect to the server at ``spec.socket``, authenticate, send the bootstrap.

    :raises HostNotFound: if nothing (or no asyncgw server) answers there.
    :raises AuthenticationError: if the server refused our secret.
    """
    if spec.installvia is not None:
        address, secret = await _install_server(spec, context)
    else:
        address = str(spec.socket)
        if not _split_address(address)[0]:
            raise SpecError(f"key 'socket' wants host:port, not {spec.socket!r}")
        secret = _secret(spec)
    host, port = _split_address(address)
    timeout = float(spec.connect_timeout or 30.0)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            transport, protocol = await loop.create_connection(
                lambda: _Protocol(sink, secret), host, port
            )
    except (OSError, TimeoutError) as exc:
        raise HostNotFound(f"cannot connect to {address}: {exc or 'timed out'}") from None
    try:
        async with asyncio.timeout(timeout):
            await protocol.admitted
    except BaseException:
        transport.abort()
        raise
    socket_transport = SocketTransport(address, transport, protocol)
    socket_transport.write(bootstrap)
    return socket_transport
