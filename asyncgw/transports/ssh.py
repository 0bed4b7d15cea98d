"""ssh: a worker on another host, over asyncssh (not the ``ssh`` binary).

``ssh=[user@]host[:port]`` runs ``python3 -c LOADER`` (or ``python=``) in an
exec session. Options, all spec keys:

====================================  =========================================
``ssh_config=PATH``                   an OpenSSH client config to read
                                      (default: ``~/.ssh/config`` if present)
``ssh_identity=PATH``                 a private key to offer
``ssh_known_hosts=PATH``              where host keys are checked (default:
                                      ``~/.ssh/known_hosts``); ``none`` turns
                                      checking off, visibly, in the spec
``ssh_jump=[user@]host[:port]``       connect through this host first
``ssh_keepalive=SECONDS``             keepalive interval (default 10); a host
                                      that stops answering is lost after 3
``connect_timeout=SECONDS``           for the connection and the greeting
====================================  =========================================

Gateways to the same host, user and options share one SSH connection, each
with a session of its own, up to :data:`MAX_SESSIONS` sessions per
connection (OpenSSH's ``MaxSessions`` default); past it another connection
opens. A connection closes when its last session ends. Nothing relies on
signals over SSH (sshd refuses them in common setups): killing closes the
session, and the worker exits when its input ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import socket
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncssh

from .._bootstrap import python_argv
from .._errors import AuthenticationError, HostKeyError, HostNotFound, SpecError
from ._base import OpenContext, StreamSink, Transport

if TYPE_CHECKING:
    from .._spec import XSpec

__all__ = ["MAX_SESSIONS", "SSHTransport", "open_ssh"]

#: Sessions per connection before another connection is opened.
MAX_SESSIONS = 10
DEFAULT_CONNECT_TIMEOUT = 30.0
#: Seconds between keepalives on an idle connection (``ssh_keepalive=``).
DEFAULT_KEEPALIVE = 10.0


@dataclass(frozen=True)
class _Target:
    host: str
    port: int | None
    user: str | None
    options: tuple[tuple[str, str | None], ...]

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.host}{port}"


def _parse_address(address: str, key: str) -> tuple[str, int | None, str | None]:
    user, _, hostport = address.rpartition("@")
    host, port = hostport, None
    if hostport.startswith("["):  # [ipv6]:port
        host, _, rest = hostport[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    if not host:
        raise SpecError(f"key {key!r} needs a host, not {address!r}")
    try:
        return host, int(port) if port else None, user or None
    except ValueError:
        raise SpecError(f"key {key!r} has a bad port in {address!r}") from None


def _target(spec: XSpec) -> _Target:
    assert spec.ssh is not None
    host, port, user = _parse_address(spec.ssh, "ssh")
    options = tuple(
        (key, getattr(spec, key))
        for key in ("ssh_config", "ssh_identity", "ssh_known_hosts", "ssh_jump", "ssh_keepalive")
        if getattr(spec, key) is not None
    )
    return _Target(host, port, user, options)


@dataclass
class _Connection:
    conn: asyncssh.SSHClientConnection
    sessions: int = 0


@dataclass
class _Pool:
    """Shared connections per target, on one event loop."""

    connections: dict[_Target, list[_Connection]] = field(default_factory=dict)
    locks: dict[_Target, asyncio.Lock] = field(default_factory=dict)


_pools: dict[asyncio.AbstractEventLoop, _Pool] = {}


def _pool() -> _Pool:
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        for old in [old for old in _pools if old.is_closed()]:
            del _pools[old]
        pool = _pools[loop] = _Pool()
    return pool


def _connect_options(target: _Target, timeout: float) -> dict[str, Any]:
    options = dict(target.options)
    keepalive = float(options.get("ssh_keepalive") or DEFAULT_KEEPALIVE)
    kwargs: dict[str, Any] = {
        "connect_timeout": timeout,
        # A host that vanishes (link down) is noticed within about 3 intervals.
        "keepalive_interval": keepalive,
        "keepalive_count_max": 3,
    }
    if target.port:
        kwargs["port"] = target.port
    if target.user:
        kwargs["username"] = target.user
    if "ssh_config" in options:
        kwargs["config"] = [os.path.expanduser(str(options["ssh_config"]))]
    if "ssh_identity" in options:
        kwargs["client_keys"] = [os.path.expanduser(str(options["ssh_identity"]))]
    known_hosts = options.get("ssh_known_hosts")
    if known_hosts == "none":
        kwargs["known_hosts"] = None
    elif known_hosts is not None:
        kwargs["known_hosts"] = os.path.expanduser(known_hosts)
    return kwargs


async def _acquire(target: _Target, timeout: float) -> _Connection:
    pool = _pool()
    async with pool.locks.setdefault(target, asyncio.Lock()):
        live = [c for c in pool.connections.get(target, []) if not c.conn.is_closed()]
        pool.connections[target] = live
        for connection in live:
            if connection.sessions < MAX_SESSIONS:
                connection.sessions += 1
                return connection
        conn = await _connect(target, timeout)
        connection = _Connection(conn, sessions=1)
        live.append(connection)
        return connection


def _release(target: _Target, connection: _Connection) -> None:
    connection.sessions -= 1
    if connection.sessions <= 0:
        connection.conn.close()
        tunnel = _tunnels.pop(connection.conn, None)
        if tunnel is not None:
            tunnel.close()
        connections = _pool().connections.get(target, [])
        if connection in connections:
            connections.remove(connection)


async def _connect(target: _Target, timeout: float) -> asyncssh.SSHClientConnection:
    jump = dict(target.options).get("ssh_jump")
    if jump is None:
        return await _connect_direct(target, timeout)
    # The jump host is reached with the same identity, known hosts and config.
    host, port, user = _parse_address(jump, "ssh_jump")
    others = tuple(option for option in target.options if option[0] != "ssh_jump")
    tunnel = await _connect_direct(_Target(host, port, user, others), timeout)
    try:
        conn = await _connect_direct(target, timeout, tunnel=tunnel)
    except BaseException:
        tunnel.close()
        raise
    _tunnels[conn] = tunnel
    return conn


#: Jump-host connections, closed with the connection that goes through them.
_tunnels: dict[asyncssh.SSHClientConnection, asyncssh.SSHClientConnection] = {}


async def _connect_direct(
    target: _Target, timeout: float, tunnel: asyncssh.SSHClientConnection | None = None
) -> asyncssh.SSHClientConnection:
    kwargs = _connect_options(target, timeout)
    if tunnel is not None:
        kwargs["tunnel"] = tunnel
    try:
        return await asyncssh.connect(target.host, **kwargs)
    except asyncssh.HostKeyNotVerifiable as exc:
        raise HostKeyError(f"host key of {target} not verified: {exc.reason}") from None
    except asyncssh.PermissionDenied as exc:
        raise AuthenticationError(f"{target} refused authentication: {exc.reason}") from None
    except (TimeoutError, OSError, socket.gaierror) as exc:
        reason = str(exc) or type(exc).__name__
        raise HostNotFound(f"cannot connect to {target}: {reason}") from None
    except asyncssh.Error as exc:
        raise HostNotFound(f"cannot connect to {target}: {exc.reason}") from None


class _Session(asyncssh.SSHClientSession[bytes]):
    def __init__(self, sink: StreamSink) -> None:
        self.sink = sink
        self.closed = asyncio.get_running_loop().create_future()
        self.exit_status: int | None = None
        self.stderr_tail = b""

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self.stderr_tail = (self.stderr_tail + data)[-2000:]
            if sys.stderr is not None:
                sys.stderr.write(data.decode("utf-8", "replace"))
        else:
            self.sink.data_received(data)

    def pause_writing(self) -> None:
        self.sink.pause_writing()

    def resume_writing(self) -> None:
        self.sink.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.sink.connection_lost("the ssh session ended")
        if not self.closed.done():
            self.closed.set_result(None)


class SSHTransport(Transport):
    """One exec session on a (shared) SSH connection."""

    def __init__(
        self,
        target: _Target,
        connection: _Connection,
        channel: asyncssh.SSHClientChannel[bytes],
        session: _Session,
    ) -> None:
        self._target = target
        self._connection = connection
        self._channel = channel
        self._session = session
        self._released = False
        session.closed.add_done_callback(lambda _: self._release())

    def _release(self) -> None:
        if not self._released:
            self._released = True
            _release(self._target, self._connection)

    def write(self, data: bytes) -> None:
        if self._channel.is_closing():
            return  # the session's end is reported through connection_lost
        with contextlib.suppress(OSError):
            self._channel.write(data)

    def close_input(self) -> None:
        if not self._channel.is_closing():
            self._channel.write_eof()

    def diagnosis(self) -> str:
        status = self._channel.get_exit_status()
        tail = self._session.stderr_tail.decode("utf-8", "replace").strip()
        text = (
            f"on {self._target}, exit status {status}"
            if status is not None
            else f"on {self._target}"
        )
        return f"{text}; stderr: {tail!r}" if tail else text

    async def wait_closed(self) -> None:
        await asyncio.shield(self._session.closed)

    async def kill(self) -> None:
        self._channel.close()
        await asyncio.shield(self._session.closed)


async def open_ssh(
    spec: XSpec, sink: StreamSink, bootstrap: bytes, context: OpenContext
) -> SSHTransport:
    """Open (or share) a connection to the spec's host and start a worker.

    :raises HostNotFound: if the host cannot be reached.
    :raises AuthenticationError: if it refused our credentials.
    :raises HostKeyError: if its host key could not be verified.
    """
    target = _target(spec)
    timeout = float(spec.connect_timeout or DEFAULT_CONNECT_TIMEOUT)
    connection = await _acquire(target, timeout)
    python = shlex.split(spec.python) if spec.python else ["python3"]
    command = shlex.join(python_argv(python))
    session = _Session(sink)
    try:
        channel, _ = await connection.conn.create_session(lambda: session, command, encoding=None)
    except BaseException:
        _release(target, connection)
        raise
    transport = SSHTransport(target, connection, channel, session)
    transport.write(bootstrap)
    return transport
