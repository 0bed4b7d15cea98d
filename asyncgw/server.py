"""An asyncgw socket server: standalone, stdlib only, Python >= 3.9.

Copy this one file to a machine (or run ``python -m asyncgw serve``); each
authenticated client gets a fresh worker interpreter whose stdin and stdout
are the client's socket. Clients authenticate by challenge–response over a
shared secret (HMAC-SHA256 of a fresh random nonce), so the secret never
crosses the network; a peer that fails gets ``DENIED`` and its connection
closed before anything runs. The secret comes from a file
(``--secret-file``) or the ``ASYNCGW_SECRET`` environment variable, never
from the command line, where process listings would show it; a secret
file that others may read is refused, as ssh refuses such keys. The server
binds to loopback unless ``--host`` says otherwise, and answers at most
``--max-pending`` connections that have not authenticated yet (each has
:data:`AUTH_TIMEOUT` seconds): more are closed at once, so a flood of idle
connections costs it neither threads nor memory without bound.

Handshake (lines of ASCII)::

    server: ASYNCGW-AUTH1 <nonce, 64 hex digits>
    client: <hex HMAC-SHA256(secret, nonce)>
    server: OK            (then the stream belongs to a worker)
        or: DENIED        (and the connection closes)
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import secrets
import socket
import subprocess
import sys
import threading

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
#: Seconds a client has to answer the challenge.
AUTH_TIMEOUT = 10.0
#: Connections being authenticated at once, at most (``--max-pending``).
MAX_PENDING = 64


def answer(secret: bytes, nonce_hex: str) -> str:
    """The response a client owes to a challenge."""
    return hmac.new(secret, bytes.fromhex(nonce_hex), hashlib.sha256).hexdigest()


def _readline(conn: socket.socket, limit: int = 256) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk or len(line) > limit:
            return b""
        line += chunk
    return line.strip()


def _log(message: str) -> None:
    sys.stderr.write(f"asyncgw.server: {message}\n")
    sys.stderr.flush()


def serve_client(
    conn: socket.socket,
    peer: object,
    secret: bytes,
    python: str,
    pending: threading.Semaphore | None = None,
) -> None:
    """Authenticate one client, then hand its socket to a new worker.
    ``pending`` is released once the client has authenticated or failed."""
    try:
        nonce = secrets.token_hex(32)
        conn.settimeout(AUTH_TIMEOUT)
        conn.sendall(CHALLENGE + nonce.encode() + b"\n")
        response = _readline(conn).decode("ascii", "replace")
        if pending is not None:
            pending.release()
            pending = None
        if not hmac.compare_digest(response, answer(secret, nonce)):
            _log(f"refused {peer}: authentication failed")
            conn.sendall(b"DENIED\n")
            return
        conn.sendall(b"OK\n")
        conn.settimeout(None)
        worker = subprocess.Popen(
            [python, "-c", LOADER], stdin=conn.fileno(), stdout=conn.fileno(), close_fds=True
        )
        _log(f"worker {worker.pid} for {peer}")
    except OSError as exc:
        _log(f"client {peer}: {exc}")
        return
    finally:
        if pending is not None:
            pending.release()
        conn.close()  # the worker holds its own copy of the socket
    worker.wait()


def read_secret(secret_file: str | None) -> bytes:
    """The shared secret, from ``secret_file`` or ``ASYNCGW_SECRET``.

    :raises SystemExit: for a secret under 16 bytes, or a file that others
        than its owner may read or write.
    """
    if secret_file:
        with open(secret_file, "rb") as stream:
            mode = os.fstat(stream.fileno()).st_mode
            if os.name == "posix" and mode & 0o077:
                raise SystemExit(
                    f"asyncgw.server: {secret_file} is open to others (mode"
                    f" {mode & 0o777:o}); make it the owner's only: chmod 600 {secret_file}"
                )
            secret = stream.read().strip()
    else:
        secret = os.environ.get("ASYNCGW_SECRET", "").encode()
    if len(secret) < 16:
        raise SystemExit(
            "asyncgw.server: a secret of at least 16 bytes is required "
            "(--secret-file PATH, or ASYNCGW_SECRET in the environment)"
        )
    return secret


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="asyncgw.server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8888, help="0 picks a free port")
    parser.add_argument("--secret-file", help="file holding the shared secret")
    parser.add_argument("--python", default=sys.executable, help="interpreter for workers")
    parser.add_argument(
        "--max-pending",
        type=int,
        default=MAX_PENDING,
        help=f"connections authenticating at once, at most (default {MAX_PENDING})",
    )
    args = parser.parse_args(argv)
    if args.max_pending < 1:
        parser.error("--max-pending must be at least 1")
    secret = read_secret(args.secret_file)
    listener = socket.create_server((args.host, args.port))
    # The first line tells whoever started us where we listen (port 0).
    host, port = listener.getsockname()[:2]
    sys.stdout.write(f"listening on {host}:{port}\n")
    sys.stdout.flush()
    serve_forever(listener, secret, args.python, args.max_pending)


def serve_forever(
    listener: socket.socket, secret: bytes, python: str, max_pending: int = MAX_PENDING
) -> None:
    """Accept clients until the listener is closed."""
    pending = threading.Semaphore(max_pending)
    while True:
        try:
            conn, peer = listener.accept()
        except OSError:  # closed: we are done
            return
        if not pending.acquire(blocking=False):
            _log(f"refused {peer}: {max_pending} connections are authenticating already")
            conn.close()
            continue
        threading.Thread(
            target=serve_client, args=(conn, peer, secret, python, pending), daemon=True
        ).start()


if __name__ == "__main__":
    main()
