"""An asyncgw socket server: standalone, stdlib only, Python >= 3.9.

Copy this one file to a machine (or run ``python -m asyncgw serve``); each
admitted client gets a fresh worker interpreter, whose input and output
the server relays to and from the client's connection.

Invariants:

- **The stream is TLS, and the server is known by its certificate.** The
  server loads ``--cert``/``--key`` (``python -m asyncgw serve`` makes a
  self-signed pair, mode 600, when they do not exist, as sshd makes its
  host keys) and prints the certificate's fingerprint,
  ``SHA256:<base64 of the SHA-256 of its DER form>``. Clients pin it and
  check it before they send a byte of their own (see
  :mod:`asyncgw.transports.socket`), so a fake server or a relay learns
  nothing and gets no code. There is no certificate authority: the pin is
  the trust, as with ssh's ``known_hosts``.
- **Clients prove a shared secret**, inside TLS, by challenge–response
  (HMAC-SHA256 of a fresh random nonce and of the server certificate's
  digest), so the secret never crosses the network and an answer is good
  for this server's certificate only (a relay with its own certificate
  cannot reuse it). A peer that fails gets ``DENIED`` and is closed before
  anything runs. The secret comes from a file (``--secret-file``, refused
  if others may read it, as ssh refuses such keys) or ``ASYNCGW_SECRET``,
  never from the command line, where process listings would show it.
- **One deadline for the whole handshake**: TLS, challenge and answer
  together within ``--handshake-timeout`` seconds of the connection's
  arrival, however slowly the peer trickles bytes. The server is one
  asyncio loop, so a connection that has not been admitted yet costs a
  socket and a few kilobytes, no thread; at most ``--max-pending`` such
  connections are kept, more are closed on arrival.
- The server binds to loopback unless ``--host`` says otherwise.
  ``--plaintext`` (no TLS) is for loopback only: a fake server or a relay
  on the path can then act as the client, as the handshake binds to no
  channel; there the admitted socket itself becomes the worker's stdin and
  stdout.

Handshake, after TLS (lines of ASCII)::

    server: ASYNCGW-AUTH1 <nonce, 64 hex digits>
    client: <hex HMAC-SHA256(secret, nonce + binding)>
    server: OK            (then the stream belongs to a worker)
        or: DENIED        (and the connection closes)

where ``binding`` is :data:`BINDING_PREFIX` and the SHA-256 digest of the
server's certificate (DER), and empty in plaintext.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import os
import secrets
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable

#: Runs under ``python -c``: read ``<10-digit length><source>``, run it.
#: (asyncgw's bootstrap sends that source; see asyncgw/_bootstrap.py.)
LOADER = (
    "import os\n"
    "def _r(n):\n"
    "    b = b''\n"
    "    while len(b) < n:\n"
    "        c = os.read(0, n - len(b))\n"
    "        if not c:\n"
    "            raise SystemExit('asyncgw: bootstrap input ended early')\n"
    "        b += c\n"
    "    return b\n"
    "exec(compile(_r(int(_r(10))), '<asyncgw bootstrap>', 'exec'))\n"
)

CHALLENGE = b"ASYNCGW-AUTH1 "
#: What the answer's HMAC covers after the nonce, before the certificate digest.
BINDING_PREFIX = b"asyncgw-tls-cert-sha256:"
#: Seconds from a connection's arrival to its admission, at most.
HANDSHAKE_TIMEOUT = 10.0
#: Connections not admitted yet, at most (``--max-pending``): enough that a
#: thousand idle ones do not keep a legitimate client out, few enough that
#: their TLS states (tens of KiB each) stay a bounded cost.
MAX_PENDING = 2048
#: Bytes of a handshake line, at most (a 64-digit answer and its newline).
LINE_LIMIT = 256
#: Where ``python -m asyncgw serve`` keeps its certificate and key by default.
DEFAULT_DIRECTORY = "~/.asyncgw"
DEFAULT_CERT = DEFAULT_DIRECTORY + "/server_cert.pem"
DEFAULT_KEY = DEFAULT_DIRECTORY + "/server_key.pem"

#: Writes a self-signed certificate and its key to the two paths (mode 600).
CertMaker = Callable[[str, str], None]


def answer(secret: bytes, nonce_hex: str, binding: bytes = b"") -> str:
    """The response a client owes to a challenge.

    :param binding: :func:`tls_binding` of the server's certificate over
        TLS; empty in plaintext.
    :raises ValueError: if ``nonce_hex`` is not hexadecimal.
    """
    return hmac.new(secret, bytes.fromhex(nonce_hex) + binding, hashlib.sha256).hexdigest()


def tls_binding(cert_der: bytes) -> bytes:
    """What an answer binds to over TLS: the server certificate's digest."""
    return BINDING_PREFIX + hashlib.sha256(cert_der).digest()


def fingerprint(cert_der: bytes) -> str:
    """``SHA256:<digest>`` of a DER certificate, as OpenSSH writes key
    fingerprints (base64, no padding) but in the URL-safe alphabet (``-``
    and ``_`` for ``+`` and ``/``), so that it never holds the ``//`` that
    separates spec keys."""
    digest = hashlib.sha256(cert_der).digest()
    return "SHA256:" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def normalise_fingerprint(text: str) -> str:
    """``text`` in :func:`fingerprint`'s form, if it is a SHA-256
    fingerprint in either base64 alphabet; else ``""``."""
    text = text.strip()
    if not text.startswith("SHA256:"):
        return ""
    body = text[len("SHA256:") :].replace("+", "-").replace("/", "_").rstrip("=")
    try:
        digest = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError:
        return ""
    if len(digest) != 32:
        return ""
    return "SHA256:" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _log(message: str) -> None:
    sys.stderr.write(f"asyncgw.server: {message}\n")
    sys.stderr.flush()


class _Refused(Exception):
    """A client that failed the handshake; the message says how."""


class _Denied(_Refused):
    """A client whose answer was wrong: told DENIED, and logged already."""


class _Client(asyncio.Protocol):
    """One connection: handshake lines into a bounded buffer, then (TLS)
    bytes relayed to and from the worker's pipes, with flow control both
    ways."""

    def __init__(self, server: Server, peer: object) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = peer
        self.buffer = bytearray()
        self.changed: asyncio.Future[None] | None = None
        self.ended = False
        self.worker: asyncio.SubprocessTransport | None = None

    # -- the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.clients.add(self)

    def data_received(self, data: bytes) -> None:
        if self.worker is not None:
            stdin = self.worker.get_pipe_transport(0)
            if stdin is not None:
                stdin.write(data)  # type: ignore[attr-defined]
            return
        self.buffer += data
        if len(self.buffer) > LINE_LIMIT and self.transport is not None:
            self.transport.pause_reading()  # the handshake fails on reading it
        self._wake()

    def eof_received(self) -> bool:
        self.ended = True
        self._close_worker_input()
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self._close_worker_input()
        self._wake()
        self.server.clients.discard(self)

    def pause_writing(self) -> None:
        out = self.worker.get_pipe_transport(1) if self.worker else None
        if out is not None:
            out.pause_reading()  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        out = self.worker.get_pipe_transport(1) if self.worker else None
        if out is not None:
            out.resume_reading()  # type: ignore[attr-defined]

    def _close_worker_input(self) -> None:
        stdin = self.worker.get_pipe_transport(0) if self.worker else None
        if stdin is not None:
            stdin.close()  # the worker exits at the end of its input

    def _wake(self) -> None:
        if self.changed is not None and not self.changed.done():
            self.changed.set_result(None)

    async def readline(self) -> bytes:
        """The next handshake line, without its line end."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > LINE_LIMIT:
                raise _Refused(f"sent {len(self.buffer)} bytes without a line end")
            if self.ended:
                raise _Refused("closed the connection during the handshake")
            self.changed = asyncio.get_running_loop().create_future()
            await self.changed
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        if len(line) > LINE_LIMIT:
            raise _Refused(f"sent a line of {len(line)} bytes")
        return line.strip()


class _Worker(asyncio.SubprocessProtocol):
    """A relayed worker: its output to the client, its pipe's back-pressure
    to the client's reading, its end to the client's connection."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        transport = self.client.transport
        if fd == 1 and transport is not None and not transport.is_closing():
            transport.write(data)

    def pause_writing(self) -> None:  # the worker's stdin is full
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None and not self.client.transport.is_closing():
            self.client.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        # Exited and every pipe drained: the client has had all its output.
        if self.client.transport is not None:
            self.client.transport.close()
        if self.transport is not None:
            self.transport.close()


class _Reaper(asyncio.SubprocessProtocol):
    """A plaintext worker, on the socket itself: only its exit to see to."""

    def __init__(self) -> None:
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def process_exited(self) -> None:
        assert self.transport is not None
        self.transport.close()


class Server:
    """Admits clients to workers; one asyncio loop for every connection.

    :param secret: the shared secret clients prove.
    :param python: the interpreter workers run on.
    :param tls: the server's TLS context, or ``None`` for plaintext.
    :param cert_der: the certificate (DER) the TLS context presents: the
        answers bind to it.
    """

    def __init__(
        self,
        secret: bytes,
        python: str,
        tls: ssl.SSLContext | None = None,
        cert_der: bytes = b"",
        max_pending: int = MAX_PENDING,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        if tls is not None and not cert_der:
            raise ValueError("a TLS server needs its certificate for the binding")
        self.secret = secret
        self.python = python
        self.tls = tls
        self.binding = tls_binding(cert_der) if tls is not None else b""
        self.max_pending = max_pending
        self.handshake_timeout = handshake_timeout
        #: Connections being admitted (their tasks), and connections up.
        self.handshakes: set[asyncio.Task[None]] = set()
        self.clients: set[_Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()

    def serve_forever(self, listener: socket.socket) -> None:
        """Accept clients on ``listener`` until :meth:`stop` (blocks)."""
        asyncio.run(self._serve(listener))

    def stop(self) -> None:
        """End :meth:`serve_forever`: close the listener and every
        connection (workers exit at the end of their input). Thread-safe."""
        if not self._ready.wait(10.0):
            return  # it never started
        assert self._loop is not None and self._stopped is not None
        with contextlib.suppress(RuntimeError):  # it has ended already: its loop is closed
            self._loop.call_soon_threadsafe(self._stopped.set)

    async def _serve(self, listener: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._ready.set()
        listener.setblocking(False)
        accepting = self._loop.create_task(self._accept(listener))
        try:
            await self._stopped.wait()
        finally:
            accepting.cancel()
            listener.close()
            for task in list(self.handshakes):
                task.cancel()
            for client in list(self.clients):
                if client.transport is not None:
                    client.transport.abort()

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(listener)
            except OSError as exc:  # out of descriptors, say: let some go first
                _log(f"cannot accept: {exc}")
                await asyncio.sleep(0.1)
                continue
            if len(self.handshakes) >= self.max_pending:
                _log(f"refused {peer}: {self.max_pending} connections are authenticating")
                conn.close()
                continue
            task = loop.create_task(self._admit(conn, peer))
            self.handshakes.add(task)
            task.add_done_callback(self.handshakes.discard)

    async def _admit(self, conn: socket.socket, peer: object) -> None:
        client = _Client(self, peer)
        loop = asyncio.get_running_loop()
        handshake = loop.create_task(self._handshake(conn, client))
        expired = False

        def expire() -> None:
            # Logged before the cancel closes the connection: whoever sees
            # the close finds the refusal already in the log.
            nonlocal expired
            expired = True
            _log(f"refused {peer}: no handshake within {self.handshake_timeout:g}s")
            handshake.cancel()

        deadline = loop.call_later(self.handshake_timeout, expire)
        try:
            try:
                await handshake  # cancelling _admit cancels the handshake too
            finally:
                deadline.cancel()
        except asyncio.CancelledError:
            # Ours at the deadline; anyone else's (the server closing) goes on.
            cancelling = getattr(asyncio.current_task(), "cancelling", lambda: 0)
            if not expired or cancelling():
                raise
        except _Denied:
            pass  # logged as it was denied
        except _Refused as exc:
            _log(f"refused {peer}: {exc}")
        except (OSError, EOFError) as exc:  # ssl.SSLError is an OSError
            _log(f"refused {peer}: {type(exc).__name__}: {exc}")
        else:
            self.handshakes.discard(asyncio.current_task())
            try:
                await self._start_worker(client)
            except OSError as exc:
                _log(f"client {peer}: cannot start a worker: {exc}")
                if client.transport is not None:
                    client.transport.abort()
            return
        if client.transport is None:  # TLS never came up (asyncio has closed it, or will)
            conn.close()
        elif not client.transport.is_closing():  # a DENIED goes out before the close
            client.transport.abort()

    async def _handshake(self, conn: socket.socket, client: _Client) -> None:
        """TLS (the protocol is connected once it is up), then the challenge."""
        loop = asyncio.get_running_loop()
        # TLS from the first byte: no plaintext phase whose reads could
        # race with an upgrade.
        await loop.connect_accepted_socket(lambda: client, conn, ssl=self.tls)
        assert client.transport is not None
        nonce = secrets.token_hex(32)
        client.transport.write(CHALLENGE + nonce.encode() + b"\n")
        response = (await client.readline()).decode("ascii", "replace")
        if not hmac.compare_digest(response, answer(self.secret, nonce, self.binding)):
            # Logged before DENIED goes out: whoever reads DENIED finds the
            # refusal already in the log.
            _log(f"refused {client.peer}: authentication failed")
            client.transport.write(b"DENIED\n")
            client.transport.close()  # after DENIED has gone
            raise _Denied("authentication failed")
        # What follows the answer belongs to the worker: hold it until there is one.
        client.transport.pause_reading()
        client.transport.write(b"OK\n")

    async def _start_worker(self, client: _Client) -> None:
        loop = asyncio.get_running_loop()
        transport = client.transport
        assert transport is not None
        argv = [self.python, "-c", LOADER]
        if self.tls is None:
            # Plaintext: the socket itself is the worker's stdin and stdout.
            sock = transport.get_extra_info("socket")
            if transport.get_write_buffer_size() or client.buffer:
                raise OSError("the client wrote before it was admitted")
            # The worker reads and writes the socket with blocking calls
            # (O_NONBLOCK belongs to the socket, shared with its copy).
            os.set_blocking(sock.fileno(), True)
            process, _ = await loop.subprocess_exec(
                _Reaper, *argv, stdin=sock.fileno(), stdout=sock.fileno(), stderr=None
            )
            transport.abort()  # our copy of the socket; the worker holds its own
            _log(f"worker {process.get_pid()} for {client.peer}")
            return
        process, _ = await loop.subprocess_exec(
            lambda: _Worker(client),
            *argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
        )
        client.worker = process
        _log(f"worker {process.get_pid()} for {client.peer}")
        for fd in (0, 1):
            _widen(process.get_pipe_transport(fd))
        stdin = process.get_pipe_transport(0)
        if client.buffer and stdin is not None:
            stdin.write(bytes(client.buffer))  # type: ignore[attr-defined]
            client.buffer.clear()
        if client.ended:
            client._close_worker_input()
        elif not transport.is_closing():
            transport.resume_reading()


#: Bytes a worker's pipes hold (Linux): fewer wake-ups per MiB relayed,
#: as asyncgw's popen transport asks for its own pipes.
PIPE_SIZE = 1024 * 1024


def _widen(pipe: asyncio.BaseTransport | None) -> None:
    try:
        import fcntl

        stream = pipe.get_extra_info("pipe") if pipe is not None else None
        if stream is not None:
            fcntl.fcntl(stream.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except (ImportError, OSError):  # not Linux, or over the user's pipe quota
        pass


def read_secret(secret_file: str | None) -> bytes:
    """The shared secret, from ``secret_file`` or ``ASYNCGW_SECRET``.

    :raises SystemExit: for a secret under 16 bytes, a file that cannot be
        read, or a file that others than its owner may read or write; the
        message is one line naming the file.
    """
    if secret_file:
        try:
            with open(secret_file, "rb") as stream:
                mode = os.fstat(stream.fileno()).st_mode
                if os.name == "posix" and mode & 0o077:
                    raise SystemExit(
                        f"asyncgw.server: {secret_file} is open to others (mode"
                        f" {mode & 0o777:o}); make it the owner's only: chmod 600 {secret_file}"
                    )
                secret = stream.read().strip()
        except OSError as exc:
            raise SystemExit(
                f"asyncgw.server: cannot read the secret file {secret_file}: {exc.strerror}"
            ) from None
    else:
        secret = os.environ.get("ASYNCGW_SECRET", "").encode()
    if len(secret) < 16:
        raise SystemExit(
            "asyncgw.server: a secret of at least 16 bytes is required "
            "(--secret-file PATH, or ASYNCGW_SECRET in the environment)"
        )
    return secret


def tls_context(cert_file: str, key_file: str) -> tuple[ssl.SSLContext, bytes]:
    """The server's TLS context (TLS 1.2 or later) and its certificate (DER).

    :raises SystemExit: if the files cannot be read or do not match,
        naming them.
    """
    try:
        with open(cert_file, encoding="ascii") as stream:
            cert_der = ssl.PEM_cert_to_DER_cert(stream.read())
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise SystemExit(
            f"asyncgw.server: cannot load the certificate {cert_file} and key {key_file}: {reason}"
        ) from None
    return context, cert_der


def _ensure_cert(cert_file: str, key_file: str, make_cert: CertMaker | None) -> None:
    """Make a certificate and key where neither exists yet, if we can."""
    have = [os.path.exists(path) for path in (cert_file, key_file)]
    if all(have):
        return
    if any(have):
        missing = cert_file if not have[0] else key_file
        raise SystemExit(f"asyncgw.server: {missing} is missing (its pair exists)")
    if make_cert is None:
        raise SystemExit(
            f"asyncgw.server: no certificate at {cert_file}: run `python -m asyncgw serve`"
            " once where asyncgw is installed (it makes one), or give --cert and --key"
            " (openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
            f" -subj /CN=asyncgw -days 3650 -keyout {key_file} -out {cert_file}),"
            " or --plaintext on loopback"
        )
    make_cert(cert_file, key_file)
    _log(f"made a new certificate {cert_file} and key {key_file}")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _raise_fd_limit() -> None:
    """Let the soft limit on open files rise to the hard one: every pending
    connection holds a descriptor, every admitted one three."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main(argv: list[str] | None = None, make_cert: CertMaker | None = None) -> None:
    """Run a server from the command line ``argv``.

    :param make_cert: makes a certificate and key when ``--cert`` and
        ``--key`` do not exist yet (``python -m asyncgw serve`` passes
        one; this file alone has none, as the stdlib cannot).
    """
    parser = argparse.ArgumentParser(prog="asyncgw.server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8888, help="0 picks a free port")
    parser.add_argument("--secret-file", help="file holding the shared secret")
    parser.add_argument("--python", default=sys.executable, help="interpreter for workers")
    parser.add_argument("--cert", default=DEFAULT_CERT, help=f"PEM certificate ({DEFAULT_CERT})")
    parser.add_argument("--key", default=DEFAULT_KEY, help=f"PEM private key ({DEFAULT_KEY})")
    parser.add_argument(
        "--plaintext",
        action="store_true",
        help="no TLS: for loopback only (a relay can then act as a client)",
    )
    parser.add_argument(
        "--max-pending",
        type=int,
        default=MAX_PENDING,
        help=f"connections not admitted yet, at most (default {MAX_PENDING})",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=float,
        default=HANDSHAKE_TIMEOUT,
        help=f"seconds for a client's whole handshake (default {HANDSHAKE_TIMEOUT:g})",
    )
    args = parser.parse_args(argv)
    if args.max_pending < 1:
        parser.error("--max-pending must be at least 1")
    if not args.handshake_timeout > 0:
        parser.error("--handshake-timeout must be positive")
    secret = read_secret(args.secret_file)
    tls, cert_der = None, b""
    if not args.plaintext:
        cert_file, key_file = os.path.expanduser(args.cert), os.path.expanduser(args.key)
        _ensure_cert(cert_file, key_file, make_cert)
        tls, cert_der = tls_context(cert_file, key_file)
    _raise_fd_limit()
    try:
        listener = socket.create_server((args.host, args.port), backlog=1024)
    except OSError as exc:
        raise SystemExit(
            f"asyncgw.server: cannot listen on {args.host}:{args.port}: {exc.strerror}"
        ) from None
    # The first lines tell whoever started us where we listen (port 0) and
    # what clients pin.
    host, port = listener.getsockname()[:2]
    if args.plaintext and not _is_loopback(host):
        _log(
            f"warning: plaintext on {host}, not loopback: anyone on the path can read the"
            " stream, and a relay can log in as a client"
        )
    sys.stdout.write(f"listening on {host}:{port}\n")
    sys.stdout.write(f"fingerprint {fingerprint(cert_der)}\n" if tls else "plaintext\n")
    sys.stdout.flush()
    server = Server(secret, args.python, tls, cert_der, args.max_pending, args.handshake_timeout)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(listener)


if __name__ == "__main__":
    main()
