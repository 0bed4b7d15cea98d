"""socket: a worker served by an asyncgw socket server (``asyncgw.server``).

``socket=host:port`` connects over TLS, verifies the server, answers its
challenge with the shared secret (``socket_secret_file=PATH``, else
``ASYNCGW_SECRET`` in our environment) and, once admitted, speaks to a
fresh worker over the same stream. Killing closes the connection; the
worker exits at end of input. ``socket//installvia=gw0`` first starts a
server through gateway ``gw0`` (free loopback port, fresh secret, fresh
certificate, pinned here), as execnet does.

Invariants:

- **Nothing of ours is sent to a server we have not verified.** The
  server's certificate must have the fingerprint pinned by
  ``socket_fingerprint=SHA256:...`` or listed for its address in the
  known-servers file (``socket_known_servers=PATH``, default
  :data:`KNOWN_SERVERS`, lines ``host:port SHA256:...`` as in ssh's
  ``known_hosts``). It is checked as soon as TLS is up, before the answer
  to the challenge and the bootstrap, so a fake server or a relay gets
  neither; a mismatch or an unknown server is a
  :class:`~asyncgw.HostKeyError`. The answer also binds to the
  certificate's digest (:func:`asyncgw.server.tls_binding`).
- **One deadline** (``connect_timeout``, default 30 s) covers connecting,
  TLS and the challenge; running out raises :class:`asyncgw.TimeoutError`
  naming the server and the stage it stopped at. The handshake read is
  bounded (:data:`HANDSHAKE_LIMIT`), whatever the server sends.
- A server that closes the connection during the handshake (too many
  connections pending, say) is a :class:`~asyncgw.GatewayError`, not
  :class:`~asyncgw.HostNotFound`, which means nothing answered there.
- ``socket_plaintext`` (no TLS) is an explicit opt-in, for loopback: a
  relay can then pass itself off as the client.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from .._bootstrap import module_source
from .._errors import (
    AuthenticationError,
    GatewayError,
    HostKeyError,
    HostNotFound,
    SpecError,
)
from .._errors import TimeoutError as GatewayTimeout
from ..server import CHALLENGE, answer, fingerprint, normalise_fingerprint, tls_binding
from ._base import OpenContext, StreamSink, Transport
from .pipereader import read_buffer

if TYPE_CHECKING:
    from .._spec import XSpec

__all__ = ["KNOWN_SERVERS", "SocketTransport", "open_socket"]

#: The known-servers file when the spec names none.
KNOWN_SERVERS = "~/.asyncgw/known_servers"
#: Bytes of handshake buffered, at most, before a line ends: a server that
#: floods without one is not an asyncgw server.
HANDSHAKE_LIMIT = 1024

#: Checks the server's certificate (DER, or None without TLS) and returns
#: what the answer binds to; raises HostKeyError.
Verifier = Callable[[bytes | None], bytes]


class _Protocol(asyncio.BufferedProtocol):
    """Handshake lines first, then every byte to the sink. Received into the
    thread's one read buffer (see :mod:`.pipereader` for why)."""

    def __init__(
        self, sink: StreamSink, secret: bytes, address: str, verify: Verifier | None
    ) -> None:
        self.sink = sink
        self.secret = secret
        self.address = address
        self.verify = verify
        self.binding = b""
        #: Where the handshake stands, for error messages.
        self.stage = "TLS handshake" if verify is not None else "challenge"
        self.buffer = b""
        self.forwarding = False
        self.admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always an asyncio.Transport
        # subclass (uvloop's TCPTransport is not).
        self.transport = cast(asyncio.Transport, transport)
        if self.verify is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            cert = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            try:
                self.binding = self.verify(cert)
            except HostKeyError as exc:
                self._fail(exc)  # before a byte of ours is written
                return
        self.stage = "challenge"

    def get_buffer(self, sizehint: int) -> memoryview:
        return read_buffer()  # filled, then handed to buffer_updated at once

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(read_buffer()[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        if self.forwarding:
            self.sink.data_received(data)
            return
        rest = bytes(data)  # the read buffer is reused: keep nothing of it beyond here
        while rest and not self.admitted.done():
            end = rest.find(b"\n")
            line = self.buffer + (rest if end < 0 else rest[:end])
            if len(line) > HANDSHAKE_LIMIT:
                self._fail(
                    HostNotFound(
                        f"not an asyncgw socket server at {self.address}: it sent"
                        f" {len(line)} bytes without a line end"
                    )
                )
                return
            if end < 0:
                self.buffer = line  # at most HANDSHAKE_LIMIT bytes held
                return
            self.buffer, rest = b"", rest[end + 1 :]
            self._handshake(line.strip())
        if self.forwarding and rest:
            self.sink.data_received(rest)

    def _handshake(self, line: bytes) -> None:
        assert self.transport is not None
        if line.startswith(CHALLENGE.strip()) and self.stage == "challenge":
            nonce = line[len(CHALLENGE) :].decode("ascii", "replace")
            try:
                response = answer(self.secret, nonce, self.binding)
            except ValueError:
                self._fail(HostNotFound(f"bad challenge {line[:80]!r} from {self.address}"))
                return
            self.stage = "verdict (OK or DENIED)"
            self.transport.write(response.encode() + b"\n")
        elif line == b"OK" and self.stage.startswith("verdict"):
            self.forwarding = True
            self.admitted.set_result(None)
        elif line == b"DENIED":
            self._fail(AuthenticationError(f"the server {self.address} refused our secret"))
        else:
            self._fail(
                HostNotFound(
                    f"not an asyncgw socket server at {self.address}: it said {line[:80]!r}"
                )
            )

    def _fail(self, exc: Exception) -> None:
        if not self.admitted.done():
            self.admitted.set_exception(exc)
        self.buffer = b""
        if self.transport is not None:
            self.transport.abort()

    def pause_writing(self) -> None:
        self.sink.pause_writing()

    def resume_writing(self) -> None:
        self.sink.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted.done():
            self.admitted.set_exception(
                GatewayError(
                    f"the socket server {self.address} closed the connection during the"
                    f" {self.stage} (too many connections pending there? see its log)"
                )
            )
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
        if self._transport.is_closing():
            return
        if self._transport.can_write_eof():
            self._transport.write_eof()
        else:  # TLS has no half-close: the server ends the worker's input on close
            self._transport.close()

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


def known_servers(path: str, address: str) -> list[str]:
    """The fingerprints the known-servers file at ``path`` lists for
    ``address`` (none if the file does not exist).

    :raises SpecError: for a line that is not ``host:port SHA256:...``,
        naming the file and line.
    """
    wanted = _split_address(address)
    found = []
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as stream:
            lines = stream.read().splitlines()
    except FileNotFoundError:
        return []
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        pin = normalise_fingerprint(fields[1]) if len(fields) == 2 else ""
        if not pin or not _split_address(fields[0])[0]:
            raise SpecError(f"{path}:{number}: not 'host:port SHA256:...': {line[:80]!r}")
        host, port = _split_address(fields[0])
        if (host.lower(), port) == (wanted[0].lower(), wanted[1]):
            found.append(pin)
    return found


def _verifier(spec: XSpec, address: str) -> Verifier:
    """The check of the server's certificate that ``spec`` asks for.

    :raises SpecError: for a malformed ``socket_fingerprint``.
    """
    pinned = ""
    if spec.socket_fingerprint is not None:
        pinned = normalise_fingerprint(str(spec.socket_fingerprint))
        if not pinned:
            raise SpecError(
                "key 'socket_fingerprint' wants SHA256:<base64 digest> (as the server"
                f" prints it), not {spec.socket_fingerprint!r}"
            )
    path = spec.socket_known_servers or KNOWN_SERVERS
    known = [] if pinned else known_servers(path, address)

    def verify(cert: bytes | None) -> bytes:
        if cert is None:
            raise HostKeyError(f"the socket server {address} showed no certificate")
        actual = fingerprint(cert)
        if pinned and actual != pinned:
            raise HostKeyError(
                f"the socket server {address} is not the one pinned: its certificate's"
                f" fingerprint is {actual}, the spec pins {pinned} (a fake server or a"
                " relay, or the server's certificate was replaced); nothing was sent"
            )
        if not pinned and known and actual not in known:
            raise HostKeyError(
                f"the socket server {address} is not the one in {path}: its certificate's"
                f" fingerprint is {actual}, the file lists {', '.join(known)} (a fake"
                " server or a relay, or the server's certificate was replaced);"
                " nothing was sent"
            )
        if not pinned and not known:
            raise HostKeyError(
                f"the socket server {address} is not known: its certificate's fingerprint"
                f" is {actual}. If that is the fingerprint the server printed, pin it:"
                f" socket_fingerprint={actual} in the spec, or the line"
                f" '{address} {actual}' in {path}; nothing was sent"
            )
        return tls_binding(cert)

    return verify


def _client_context() -> ssl.SSLContext:
    # No certificate authority: the pin is checked in _Protocol.connection_made.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


#: Appended to the server's own source when a gateway installs it: listen
#: on a free port with the certificate we made, report the port, serve
#: until our channel closes. The key is on disk only while it is loaded.
_INSTALLED = """
import os as _os, socket as _socket, sys as _sys, tempfile as _tempfile
import threading as _threading
_host, _secret, _cert, _key = channel.receive()
_tls, _der = None, b""
if _cert:
    _dir = _tempfile.mkdtemp(prefix="asyncgw-server-")
    _paths = [_os.path.join(_dir, "cert.pem"), _os.path.join(_dir, "key.pem")]
    try:
        for _path, _data in zip(_paths, (_cert, _key)):
            _fd = _os.open(_path, _os.O_WRONLY | _os.O_CREAT | _os.O_EXCL, 0o600)
            with _os.fdopen(_fd, "wb") as _stream:
                _stream.write(_data)
        _tls, _der = tls_context(*_paths)
    finally:
        for _path in _paths:
            if _os.path.exists(_path):
                _os.remove(_path)
        _os.rmdir(_dir)
_listener = _socket.create_server((_host, 0))
_server = Server(_secret, _sys.executable, _tls, _der)
_threading.Thread(target=_server.serve_forever, args=(_listener,), daemon=True).start()
channel.send(_listener.getsockname()[1])
try:
    channel.receive()
except EOFError:
    pass
_server.stop()
"""


async def _install_server(spec: XSpec, context: OpenContext) -> tuple[str, bytes, str]:
    """Start a socket server through the gateway ``spec.installvia`` (on a
    free port, with a fresh secret and certificate) and return its address,
    secret and certificate fingerprint (empty in plaintext). The server
    lives as long as that gateway, or until the channel closes."""
    group = context.group
    if group is None or spec.installvia not in group:
        raise SpecError(f"spec {str(spec)!r}: no gateway {spec.installvia!r} to install via")
    assert spec.installvia is not None
    host = "127.0.0.1" if spec.socket in (None, True) else str(spec.socket).rpartition(":")[0]
    secret = secrets.token_hex(32).encode()
    cert_pem, key_pem, pin = b"", b"", ""
    if not spec.socket_plaintext:
        from .._certgen import make_pem  # cryptography: only when needed

        cert_pem, key_pem = make_pem()
        pin = fingerprint(ssl.PEM_cert_to_DER_cert(cert_pem.decode("ascii")))
    source = module_source("server") + _INSTALLED
    # The gateway's channel is the trusted path for the key.
    channel = group[spec.installvia].remote_exec(source)
    await channel.send((host, secret, cert_pem, key_pem))
    port = await channel.receive()
    return f"{host}:{port}", secret, pin


async def open_socket(
    spec: XSpec, sink: StreamSink, bootstrap: bytes, context: OpenContext
) -> SocketTransport:
    """Connect to the server at ``spec.socket``, verify it, authenticate,
    send the bootstrap.

    :raises HostNotFound: if nothing (or no asyncgw server) answers there.
    :raises HostKeyError: if the server's certificate is not the pinned or
        known one, or it is not known; nothing was sent to it.
    :raises AuthenticationError: if the server refused our secret.
    :raises GatewayError: if the server closed the connection during the
        handshake.
    :raises asyncgw.TimeoutError: if the handshake did not end within
        ``connect_timeout``, naming the stage.
    """
    if spec.socket_plaintext and spec.socket_fingerprint is not None:
        raise SpecError("keys 'socket_plaintext' and 'socket_fingerprint' exclude each other")
    pin = ""
    if spec.installvia is not None:
        address, secret, pin = await _install_server(spec, context)
    else:
        address = str(spec.socket)
        if not _split_address(address)[0]:
            raise SpecError(f"key 'socket' wants host:port, not {spec.socket!r}")
        secret = _secret(spec)
    host, port = _split_address(address)
    verify: Verifier | None = None
    tls: ssl.SSLContext | None = None
    if not spec.socket_plaintext:
        tls = _client_context()
        verify = _verifier(spec, address)
        if pin:
            verify = _pinned(pin, address)
    timeout = float(spec.connect_timeout or 30.0)
    loop = asyncio.get_running_loop()
    made: list[_Protocol] = []

    def protocol() -> _Protocol:
        made.append(_Protocol(sink, secret, address, verify))
        return made[-1]

    try:
        async with asyncio.timeout(timeout):  # one deadline for every stage
            try:
                transport, _ = await loop.create_connection(
                    protocol,
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                    ssl_handshake_timeout=timeout if tls is not None else None,
                )
            except OSError as exc:
                raise _connect_error(address, exc, connected=bool(made)) from None
            try:
                await made[-1].admitted
            except BaseException:
                transport.abort()
                raise
    except TimeoutError as exc:
        if isinstance(exc, GatewayTimeout):
            raise
        stage = made[-1].stage if made else "TCP connection"
        raise GatewayTimeout(
            f"the socket server {address} did not answer within {timeout:g}s"
            f" (connect_timeout): no {stage}"
        ) from None
    socket_transport = SocketTransport(address, transport, made[-1])
    socket_transport.write(bootstrap)
    return socket_transport


def _pinned(pin: str, address: str) -> Verifier:
    """The check of a server we installed ourselves, with our certificate."""

    def verify(cert: bytes | None) -> bytes:
        actual = fingerprint(cert) if cert is not None else "none"
        if actual != pin:
            raise HostKeyError(
                f"the socket server {address} is not the one installed: its certificate's"
                f" fingerprint is {actual}, ours is {pin}; nothing was sent"
            )
        assert cert is not None
        return tls_binding(cert)

    return verify


def _connect_error(address: str, exc: OSError, connected: bool) -> GatewayError:
    """What a failed connection means: nothing there, a server that closed
    on us during TLS, or one that does not speak TLS."""
    if not connected:
        return HostNotFound(f"cannot connect to {address}: {exc}")
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError):
        return HostNotFound(
            f"not an asyncgw TLS socket server at {address} ({exc.reason or exc});"
            " a server started with --plaintext needs socket_plaintext in the spec"
        )
    return GatewayError(
        f"the socket server {address} closed the connection during the TLS handshake"
        f" ({str(exc) or type(exc).__name__}; too many connections pending there? see its log)"
    )
