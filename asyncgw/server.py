"""An asyncgw socket server: standalone, stdlib only, Python >= 3.9.

Copy this one file to a machine (or run ``python -m asyncgw serve``); each
authenticated client gets a fresh worker interpreter whose stdin and stdout
are the client's socket. Clients authenticate by challenge–response over a
shared secret (HMAC-SHA256 of a fresh random nonce), so the secret never
crosses the network; a peer that fails gets ``DENIED`` and its connection
closed before anything runs. The secret comes from a file
(``--secret-file``) or the ``ASYNCGW_SECRET`` environment variable, never
from the command line, where process listings would show it. The server
binds to loopback unless ``--host`` says otherwise.

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


def serve_client(conn: socket.socket, peer: object, secret: bytes, python: str) -> None:
    """Authenticate one client, then hand its socket to a new worker."""
    try:
        nonce = secrets.token_hex(32)
        conn.settimeout(AUTH_TIMEOUT)
        conn.sendall(CHALLENGE + nonce.encode() + b"\n")
        response = _readline(conn).decode("ascii", "replace")
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
        conn.close()  # the worker holds its own copy of the socket
    worker.wait()


def read_secret(secret_file: str | None) -> bytes:
    if secret_file:
        with open(secret_file, "rb") as stream:
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
    args = parser.parse_args(argv)
    secret = read_secret(args.secret_file)
    listener = socket.create_server((args.host, args.port))
    # The first line tells whoever started us where we listen (port 0).
    host, port = listener.getsockname()[:2]
    sys.stdout.write(f"listening on {host}:{port}\n")
    sys.stdout.flush()
    serve_forever(listener, secret, args.python)


def serve_forever(listener: socket.socket, secret: bytes, python: str) -> None:
    """Accept clients until the listener is closed."""
    while True:
        try:
            conn, peer = listener.accept()
        except OSError:  # closed: we are done
            return
        threading.Thread(
            target=serve_client, args=(conn, peer, secret, python), daemon=True
        ).start()


if __name__ == "__main__":
    main()
