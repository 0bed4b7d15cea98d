"""Shared SSH connections, within the limits of OpenSSH's sshd.

Everything that talks SSH — ssh gateways, the fleet's commands and file
copies — asks this pool for a session slot on a connection to a
:class:`SSHTarget` (host, port, user and the options that change what
the connection is). Connections are shared per target and event loop,
so a gateway and a fleet command to the same host ride one connection.

sshd drops what exceeds its own limits, so the pool stays inside them:

- ``max_startups``: handshakes in flight to one host (sshd's
  ``MaxStartups``, whose first number is 10 by default: past it sshd
  starts refusing unauthenticated connections at random). A handshake
  that sshd drops anyway is retried with exponential back-off and
  jitter, until the connect timeout.
- ``max_sessions``: sessions per connection (``MaxSessions``, 10); past
  it another connection to the same target opens.
- ``max_connections``: connections open at once, overall. At the cap,
  an idle connection (no session, kept only by a :class:`Hold`) is
  closed to make room; otherwise the caller waits for one to close.

A new TCP connection acknowledges what it receives at once for its
first second (``_PromptAcks``): sshd's reply to our first channel open
otherwise waits on Nagle's algorithm for our delayed acknowledgement of
its host-keys message, ~40 ms of each start.

A connection closes when its last session ends and nothing holds it. A
:class:`Hold` (what a fleet action keeps between runs) keeps it open
while idle, so that a second command reuses it. Connections through a
jump host share one connection to that jump host.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from .._errors import AuthenticationError, HostKeyError, HostNotFound, SpecError

__all__ = [
    "Hold",
    "Limits",
    "SSHTarget",
    "Slot",
    "acquire",
    "limits",
    "parse_address",
]

DEFAULT_KEEPALIVE = 10.0
#: Ciphers put ahead of asyncssh's defaults (whose first is
#: chacha20-poly1305): AES-GCM is one call per packet into cryptography's
#: AES-NI code, where chacha20-poly1305 takes several; a small round trip
#: over a gateway costs about a quarter less (loopback sshd, 292 -> 212 us).
#: Both are AEADs that OpenSSH offers by default; an ssh config that names
#: its ``Ciphers`` is followed instead.
PREFERRED_CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"


@dataclass
class Limits:
    """The pool's limits (see the module docstring); one instance,
    :data:`limits`, applies to every connection the process makes."""

    max_startups: int = 10
    max_sessions: int = 10
    max_connections: int = 1000


#: The limits in force; change its fields to change them.
limits = Limits()

#: Option names a target may carry, with the spec keys they come from.
OPTION_KEYS = ("ssh_config", "ssh_identity", "ssh_known_hosts", "ssh_jump", "ssh_keepalive")


@dataclass(frozen=True)
class SSHTarget:
    """Where a connection goes and how: connections are shared between
    equal targets only."""

    host: str
    port: int | None = None
    user: str | None = None
    options: tuple[tuple[str, str | None], ...] = ()

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.host}{port}"

    def option(self, key: str) -> str | None:
        return dict(self.options).get(key)


def parse_address(address: str, key: str) -> tuple[str, int | None, str | None]:
    """``[user@]host[:port]`` (``[v6]:port`` too) as (host, port, user).

    :raises SpecError: naming ``key`` for a missing host or a bad port.
    """
    if address.startswith("-") or any(c.isspace() for c in address.strip()):
        # execnet's ssh= passed options to the ssh command; asyncssh takes none.
        raise SpecError(
            f"key {key!r} takes [user@]host[:port] or a ~/.ssh/config alias, not ssh"
            f" command-line options: {address!r} (a port goes in the address,"
            f" 'ssh=host:2222'; other options in ~/.ssh/config or ssh_config=)"
        )
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
    if port is None or port == "":
        return host, None, user or None
    # ASCII digits only (int() also takes "+22", " 22", "2_2"), in the range of a TCP
    # port: past it, the socket layer would raise a bare OverflowError.
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise SpecError(
            f"key {key!r} has a bad port in {address!r}: a port is a number from 1 to 65535"
        )
    return host, int(port), user or None


@dataclass(eq=False)
class _Connection:
    target: SSHTarget
    conn: asyncssh.SSHClientConnection
    sessions: int = 0
    holds: int = 0
    #: Connections that go through this one (as a jump host): they are
    #: forwarded TCP channels, which sshd's MaxSessions does not count.
    tunnels: int = 0
    tunnel: _Connection | None = None
    #: What users of the pool keep per connection, by key (the ssh
    #: transport's fork servers): it goes with the connection.
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def idle(self) -> bool:
        return self.sessions <= 0 and self.tunnels <= 0


@dataclass
class _Pool:
    """Connections per target, on one event loop."""

    connections: dict[SSHTarget, list[_Connection]] = field(default_factory=dict)
    locks: dict[SSHTarget, asyncio.Lock] = field(default_factory=dict)
    #: Callers of :func:`acquire` waiting for a target's lock.
    queued: dict[SSHTarget, int] = field(default_factory=dict)
    handshakes: dict[tuple[str, int | None], asyncio.Semaphore] = field(default_factory=dict)
    open_count: int = 0
    closed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def all(self) -> list[_Connection]:
        return [c for conns in self.connections.values() for c in conns]


_pools: dict[asyncio.AbstractEventLoop, _Pool] = {}


def _pool() -> _Pool:
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        for old in [old for old in _pools if old.is_closed()]:
            del _pools[old]
        pool = _pools[loop] = _Pool()
    return pool


class Slot:
    """One session's claim on a shared connection; :meth:`release` once."""

    def __init__(self, connection: _Connection, queued: int = 0) -> None:
        self._connection = connection
        self._released = False
        #: Other callers that were waiting for a slot on the same target
        #: when this one was handed out (more sessions are coming).
        self.queued = queued

    @property
    def target(self) -> SSHTarget:
        return self._connection.target

    @property
    def conn(self) -> asyncssh.SSHClientConnection:
        return self._connection.conn

    @property
    def extras(self) -> dict[str, Any]:
        """State kept with this slot's connection (see ``_Connection.extras``)."""
        return self._connection.extras

    def hold(self) -> Hold:
        """A hold on this slot's connection, to keep it open once idle."""
        return Hold(self._connection)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._connection.sessions -= 1
            _close_if_unused(self._connection)


class Hold:
    """Keeps a connection open while it has no session; :meth:`release` once."""

    def __init__(self, connection: _Connection) -> None:
        self._connection: _Connection | None = connection
        #: The loop the connection lives on: release there (see the fleet's finalizers).
        self._loop = asyncio.get_running_loop()
        connection.holds += 1

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.holds -= 1
            _close_if_unused(connection)


def _close_if_unused(connection: _Connection) -> None:
    if connection.idle and connection.holds <= 0:
        _close(connection)


def _close(connection: _Connection) -> None:
    connection.conn.close()
    try:
        pool = _pool()
    except RuntimeError:  # released from a finalizer after the loop stopped
        return
    connections = pool.connections.get(connection.target, [])
    if connection in connections:
        connections.remove(connection)
        pool.open_count -= 1
        if connection.tunnel is not None:
            connection.tunnel.tunnels -= 1
            _close_if_unused(connection.tunnel)

        async def notify() -> None:
            async with pool.closed:
                pool.closed.notify_all()

        asyncio.get_running_loop().create_task(notify())


async def acquire(target: SSHTarget, timeout: float) -> Slot:
    """A session slot on a connection to ``target``: an existing one with
    room, or a new connection.

    :raises HostNotFound: if the host cannot be reached in ``timeout``.
    :raises AuthenticationError: if it refused our credentials.
    :raises HostKeyError: if its host key could not be verified.
    """
    pool = _pool()
    pool.queued[target] = pool.queued.get(target, 0) + 1
    try:
        lock = pool.locks.setdefault(target, asyncio.Lock())
        await lock.acquire()
    finally:
        pool.queued[target] -= 1
    try:
        for dead in [c for c in pool.connections.get(target, []) if c.conn.is_closed()]:
            _close(dead)  # lost (the host went away): forget it
        for connection in pool.connections.get(target, []):
            if connection.sessions < limits.max_sessions:
                connection.sessions += 1
                return Slot(connection, pool.queued[target])
        connection = await _open(pool, target, timeout)
        connection.sessions = 1
        return Slot(connection, pool.queued[target])
    finally:
        lock.release()


async def _open(pool: _Pool, target: SSHTarget, timeout: float) -> _Connection:
    async with asyncio.timeout(timeout):
        await _room(pool)
        pool.open_count += 1  # reserved now, so that concurrent opens see it
    try:
        tunnel = None
        jump = target.option("ssh_jump")
        if jump is not None:
            host, port, user = parse_address(jump, "ssh_jump")
            others = tuple(option for option in target.options if option[0] != "ssh_jump")
            tunnel = await _jump(pool, SSHTarget(host, port, user, others), timeout)
        try:
            conn = await _connect(target, timeout, tunnel.conn if tunnel else None)
        except BaseException:
            if tunnel is not None:
                tunnel.tunnels -= 1
                _close_if_unused(tunnel)
            raise
    except BaseException:
        pool.open_count -= 1
        raise
    connection = _Connection(target, conn, tunnel=tunnel)
    pool.connections.setdefault(target, []).append(connection)
    return connection


async def _jump(pool: _Pool, target: SSHTarget, timeout: float) -> _Connection:
    """The one connection to a jump host (opened if need be), counting one
    more connection through it."""
    async with pool.locks.setdefault(target, asyncio.Lock()):
        for dead in [c for c in pool.connections.get(target, []) if c.conn.is_closed()]:
            _close(dead)
        live = pool.connections.get(target, [])
        connection = live[0] if live else await _open(pool, target, timeout)
        connection.tunnels += 1
        return connection


async def _room(pool: _Pool) -> None:
    """Wait until a connection may open under ``max_connections``,
    closing idle held connections first."""
    while pool.open_count >= limits.max_connections:
        idle = [c for c in pool.all() if c.idle]
        if idle:
            _close(idle[0])
            continue
        async with pool.closed:
            await pool.closed.wait()


#: What sshd's dropping of a handshake looks like from here (MaxStartups,
#: or a listen backlog overflow): worth another try, unlike a refusal.
_DROPPED = (ConnectionResetError, BrokenPipeError, asyncssh.ConnectionLost)


async def _connect(
    target: SSHTarget, timeout: float, tunnel: asyncssh.SSHClientConnection | None
) -> asyncssh.SSHClientConnection:
    pool = _pool()
    gate = pool.handshakes.setdefault(
        (target.host, target.port), asyncio.Semaphore(limits.max_startups)
    )
    kwargs = _connect_options(target, timeout)
    if tunnel is not None:
        kwargs["tunnel"] = tunnel
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.05
    try:
        while True:
            try:
                async with gate:
                    kwargs["connect_timeout"] = max(0.1, deadline - loop.time())
                    conn = await asyncssh.connect(target.host, **kwargs)
                _acknowledge_promptly(conn)
                return conn
            except _DROPPED as exc:
                if loop.time() + delay >= deadline:
                    raise HostNotFound(f"cannot connect to {target}: {_reason(exc)}") from None
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 2.0)
    except asyncssh.HostKeyNotVerifiable as exc:
        raise HostKeyError(f"host key of {target} not verified: {exc.reason}") from None
    except asyncssh.PermissionDenied as exc:
        raise AuthenticationError(f"{target} refused authentication: {exc.reason}") from None
    except (TimeoutError, OSError, socket.gaierror, asyncssh.Error) as exc:
        raise HostNotFound(f"cannot connect to {target}: {_reason(exc)}") from None


class _PromptAcks(asyncio.Protocol):
    """Between a new connection's TCP transport and asyncssh, for its first
    moments: acknowledges what arrives at once, then hands it on.

    sshd sets TCP_NODELAY only for sessions with a terminal, so Nagle's
    algorithm holds back a small packet of its while an earlier one is
    unacknowledged; the kernel here delays that acknowledgement (40 ms or
    more) when we have just sent something. Right after authentication
    sshd sends its host keys, and then its reply to the channel open we
    sent meanwhile, which so waited ~40 ms in most starts. TCP_QUICKACK,
    set after each read, sends the acknowledgement now. Later, requests
    carry the acknowledgements of replies, and a prompt one would cost a
    packet and a system call a read (a small round trip's CPU here +4%):
    the shim steps aside after :data:`PROMPT_ACKS_SECONDS`.
    """

    def __init__(self, inner: asyncio.Protocol, sock: Any, option: int) -> None:
        self._inner = inner
        self._sock = sock
        self._option = option

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass  # asyncssh has had it

    def data_received(self, data: bytes) -> None:
        # Cannot fail on a connected TCP socket; it is asyncio's until it closes.
        self._sock.setsockopt(socket.IPPROTO_TCP, self._option, 1)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
#: Seconds after authentication during which every read is acknowledged at
#: once: past the longest delayed acknowledgement (Linux: 200 ms), and the
#: sessions a start opens (the first gateway's, a fork server's) are open.
PROMPT_ACKS_SECONDS = 1.0


def _acknowledge_promptly(conn: asyncssh.SSHClientConnection) -> None:
    """Put :class:`_PromptAcks` under ``conn`` for its first moments, if it
    runs over TCP here.

    asyncssh does not expose its transport (``_transport``); without it,
    or through a jump host or a proxy command, the connection is left as
    it is.
    """
    option = _TCP_QUICKACK
    if option is None:
        return
    transport = getattr(conn, "_transport", None)
    sock = conn.get_extra_info("socket")
    if (
        not isinstance(transport, asyncio.Transport)
        or transport.get_protocol() is not conn
        or sock is None
        or sock.family not in (socket.AF_INET, socket.AF_INET6)
        or sock.type != socket.SOCK_STREAM
    ):
        return
    try:  # an acknowledgement already due (sshd's host keys) goes now
        sock.setsockopt(socket.IPPROTO_TCP, option, 1)
    except OSError:
        return
    shim = _PromptAcks(conn, sock, option)
    transport.set_protocol(shim)

    def step_aside() -> None:
        if transport.get_protocol() is shim and not transport.is_closing():
            transport.set_protocol(conn)

    asyncio.get_running_loop().call_later(PROMPT_ACKS_SECONDS, step_aside)


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or str(exc)
    return str(reason) or type(exc).__name__


#: Key pairs loaded, by file and its (and its certificate's) stat: a fleet
#: connects to many hosts with one key, and loading it per connection cost
#: ~170 µs of CPU and ~10 KiB each.
_identities: dict[tuple[object, ...], Any] = {}
_IDENTITIES_KEPT = 16


def _file_state(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _load_identity(path: str) -> Any:
    """The key pairs of the key file ``path`` (and its ``-cert.pub``), loaded
    before connecting, once while neither file changes: a key file that is
    missing, unreadable, not a key, or encrypted (no passphrase is asked for)
    is a mistake of the caller's, named as such, not a host that cannot be
    reached.

    :raises SpecError: naming the key ``ssh_identity`` and the file.
    """
    state = (path, _file_state(path), _file_state(path + "-cert.pub"))
    keypairs = _identities.get(state) if state[1] is not None else None
    if keypairs is not None:
        return keypairs
    try:
        keypairs = asyncssh.load_keypairs([path])
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SpecError(f"key 'ssh_identity': cannot read key file {path!r}: {reason}") from None
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise SpecError(
            f"key 'ssh_identity': {path!r} is not a usable private key: {exc}"
        ) from None
    if len(_identities) >= _IDENTITIES_KEPT:
        _identities.clear()
    _identities[state] = keypairs
    return keypairs


def _connect_options(target: SSHTarget, timeout: float) -> dict[str, Any]:
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
        kwargs["client_keys"] = _load_identity(os.path.expanduser(str(options["ssh_identity"])))
    config = kwargs.get("config") or [os.path.expanduser("~/.ssh/config")]
    if not any(_names_ciphers(path) for path in config):
        kwargs["encryption_algs"] = PREFERRED_CIPHERS
    known_hosts = options.get("ssh_known_hosts")
    if known_hosts == "none":
        kwargs["known_hosts"] = None
    elif known_hosts is not None:
        kwargs["known_hosts"] = os.path.expanduser(known_hosts)
    return kwargs


def _names_ciphers(path: str) -> bool:
    """Whether the ssh config file ``path`` has a ``Ciphers`` line."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return any(
                line.strip().lower().replace("=", " ", 1).split()[:1] == ["ciphers"]
                for line in file
            )
    except OSError:
        return False
