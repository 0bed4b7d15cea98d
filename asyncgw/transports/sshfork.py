"""Fork servers on ssh hosts: a host's second and later workers are forked.

Each ssh worker started through sshd is a fresh interpreter (an exec
session: tens of milliseconds of the host's CPU, more with a slow disk).
When a second gateway with the same ``python=`` rides a connection, this
module starts a fork server on the host through one exec session (the
far side is ``remote/forkserver.py``, in its ``listen`` mode: a Unix
socket in a fresh directory of mode 0700 in the host's temp directory)
and has it fork that gateway's worker and every later one, each reached
over a direct-streamlocal channel of the same connection: a fork and a
channel open instead of an interpreter start. A lone first gateway of a
connection is started as before, so that a single gateway pays nothing;
a first gateway that others to the same target queue behind (a group's
batch) is forked too, from a fork server started at once.

Invariants:

- The fork server lives as long as its connection: closing the connection
  ends its exec session, whose end of input makes it remove its socket
  and directory and exit. Its workers end at the end of their own input
  (their channels close with the connection), as exec'd ones do.
- It takes one of the connection's sessions on the host (sshd's
  ``MaxSessions`` counts it) but no slot of the pool: the pool keeps
  counting every gateway, forked or not, so connections fill as before.
- Whatever fails falls back to an exec session, transparently: a fork
  server that does not start, a host that refuses streamlocal forwarding
  (OpenSSH's ``AllowStreamLocalForwarding no``: remembered per target, so
  that only the first connection to such a host pays for the attempt),
  a fork server that is lost.
- A forked worker's stderr is the fork server's, forwarded to our
  ``sys.stderr`` as an exec session's is; its exit status is reported by
  the fork server, which reaps it; killing it closes its channel and
  kills its process group there.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import sys
import weakref
from typing import Any

import asyncssh

from .._bootstrap import bootstrap_payload, python_argv
from .._wire import DATA, FrameDecoder, dumps, encode_frame
from ._base import StreamSink
from .forkserver import deliver, read_greeting
from .sshpool import Slot, SSHTarget
from .sshstream import SSHTransport, StreamSession

__all__ = ["ForkedSSHTransport", "RemoteForkServer", "fork_worker"]

log = logging.getLogger("asyncgw")

#: The key of a connection's fork servers in its ``extras``.
EXTRAS_KEY = "asyncgw.sshfork"
#: Bytes of the fork server's stderr kept to explain a worker's end.
STDERR_KEPT = 2000
#: Seconds to wait, once a forked worker's channel closed, for its exit
#: status (so that the loss can be reported with it).
EXIT_STATUS_WAIT = 0.5

#: False: start every ssh worker in an exec session of its own (as before
#: fork servers; benchmarks compare both in one run).
enabled = True

#: Targets whose host refused a streamlocal channel to a running fork
#: server, per event loop (as the pool's connections are).
_refused: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[SSHTarget]] = (
    weakref.WeakKeyDictionary()
)


class _Entry:
    """One connection's fork server for one ``python=``."""

    def __init__(self) -> None:
        self.gateways = 0
        self.server: asyncio.Task[RemoteForkServer | None] | None = None
        self.failure_logged = False


async def fork_worker(
    slot: Slot, python: list[str], config: dict[str, Any], sink: StreamSink, timeout: float
) -> ForkedSSHTransport | None:
    """The worker of ``config`` forked by the fork server of ``slot``'s
    connection for ``python``, started if need be; None: start it with an
    exec session (the connection's first gateway, or no fork server).
    The transport owns ``slot`` once returned. Cancelling closes what was
    opened (the worker ends with its input).
    """
    target = slot.target
    refused = _refused.setdefault(asyncio.get_running_loop(), set())
    if not enabled or target in refused:
        return None
    entries: dict[tuple[str, ...], _Entry] = slot.extras.setdefault(EXTRAS_KEY, {})
    entry = entries.setdefault(tuple(python), _Entry())
    entry.gateways += 1
    if entry.server is None:
        if entry.gateways < 2 and not slot.queued:
            return None  # a lone gateway: started as before, at no extra cost
        entry.server = asyncio.ensure_future(_start(slot.conn, target, python, timeout))
    server = await asyncio.shield(entry.server)
    if server is None or server.lost:
        return None
    try:
        return await server.fork(slot, config, sink, timeout)
    except asyncssh.ChannelOpenError as exc:
        # sshd opens no channel to the socket of a running fork server. If
        # it never did, streamlocal forwarding is off there (OpenSSH gives
        # no reason); if it did, the fork server is gone.
        if server.forked:
            server.gone()
            log.warning("fork server on %s is gone (%s); starting workers afresh", target, exc)
        elif target not in refused:
            refused.add(target)
            log.debug("%s opens no streamlocal channel (%s): ssh workers are started", target, exc)
        await server.close()
        return None
    except (OSError, ConnectionError, TimeoutError, asyncssh.Error) as exc:
        if not entry.failure_logged:  # once, not once per waiting worker
            entry.failure_logged = True
            log.warning("fork server on %s failed (%s); starting workers afresh", target, exc)
        return None


async def _start(
    conn: asyncssh.SSHClientConnection, target: SSHTarget, python: list[str], timeout: float
) -> RemoteForkServer | None:
    try:
        return await RemoteForkServer.start(conn, target, python, timeout)
    except (OSError, ConnectionError, TimeoutError, asyncssh.Error) as exc:
        log.debug("no fork server on %s: %s", target, exc)
        return None


class _ControlSession(asyncssh.SSHClientSession[bytes]):
    def __init__(self, server: RemoteForkServer) -> None:
        self._server = server

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self._server.stderr_received(data)
        else:
            self._server.data_received(data)

    # Its end is known from its exit (sshd tells it at once), its output's
    # end or the session's, whichever comes first: its workers hold its
    # stderr, which may keep the session open after it is gone.

    def exit_status_received(self, status: int) -> None:
        self._server.gone()

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self._server.gone()

    def eof_received(self) -> bool:
        self._server.gone()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.gone()
        self._server.session_closed()


class RemoteForkServer:
    """A fork server on an ssh host, driven through its exec session."""

    def __init__(self, target: SSHTarget, conn: asyncssh.SSHClientConnection) -> None:
        self._target = target
        self._conn = conn
        loop = asyncio.get_running_loop()
        self._greeting: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._received: bytes | None = b""  # None once greeted
        self._decoder = FrameDecoder()
        self._replies: dict[int, asyncio.Future[int]] = {}
        self._requests = 0
        self._workers: dict[int, ForkedSSHTransport] = {}
        self._exit_codes: dict[int, int] = {}  # reported before we knew the pid
        self._channel: asyncssh.SSHClientChannel[bytes] | None = None
        self.closed: asyncio.Future[None] = loop.create_future()
        self.lost = False
        #: Workers forked so far.
        self.forked = 0
        self.path = ""
        self.pid: int | None = None
        self.stderr = b""

    @classmethod
    async def start(
        cls,
        conn: asyncssh.SSHClientConnection,
        target: SSHTarget,
        python: list[str],
        timeout: float,
    ) -> RemoteForkServer:
        """Start a fork server with ``python`` on ``conn``'s host.

        :raises ConnectionError: if it does not come up as a fork server.
        :raises TimeoutError: if it does not greet within ``timeout``.
        :raises asyncssh.ChannelOpenError: if sshd refuses the session.
        """
        server = cls(target, conn)
        command = shlex.join(python_argv(python))
        server._channel, _ = await conn.create_session(
            lambda: _ControlSession(server), command, encoding=None
        )
        try:
            server._channel.write(bootstrap_payload({"listen": True}, forkserver=True))
            async with asyncio.timeout(timeout):
                hello = await asyncio.shield(server._greeting)
            path, pid = hello.get("socket"), hello.get("pid")
            if not isinstance(path, str) or not isinstance(pid, int):
                raise ConnectionError("the fork server names no socket")
        except BaseException:
            await server.close()
            raise
        server.path, server.pid = path, pid
        return server

    # -- its exec session

    def data_received(self, data: bytes) -> None:
        if self._received is not None:
            self._received += data
            try:
                greeting = read_greeting(self._received)
            except ConnectionError as exc:
                self._received = None
                if not self._greeting.done():
                    self._greeting.set_exception(exc)
                self.close_soon()
                return
            if greeting is None:
                return
            hello, data = greeting
            self._received = None
            self._greeting.set_result(hello)
        deliver(self._decoder.feed(data), self._workers, self._exit_codes, self._replies)

    def stderr_received(self, data: bytes) -> None:
        self.stderr = (self.stderr + data)[-STDERR_KEPT:]
        if sys.stderr is not None:
            sys.stderr.write(data.decode("utf-8", "replace"))

    def session_closed(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def gone(self) -> None:
        """The fork server is gone (or going): fork no more."""
        if self.lost:
            return
        self.lost = True
        gone = ConnectionError(f"the fork server on {self._target} is gone")
        if not self._greeting.done():
            self._greeting.set_exception(gone)
            self._greeting.exception()  # retrieved: nobody may be waiting
        for reply in self._replies.values():
            if not reply.done():
                reply.set_exception(gone)
        for worker in self._workers.values():
            worker.exited(None)  # nobody reports their exit now
        self._workers.clear()

    # -- forking

    async def fork(
        self, slot: Slot, config: dict[str, Any], sink: StreamSink, timeout: float
    ) -> ForkedSSHTransport:
        """A worker with ``config``, forked and reached over a new channel.

        :raises asyncssh.ChannelOpenError: if sshd opens no channel to the socket.
        :raises OSError: if the fork server cannot fork.
        :raises ConnectionError: if the fork server is gone.
        """
        self._requests += 1
        request = self._requests
        reply = self._replies[request] = asyncio.get_running_loop().create_future()
        session = _ForkedSession(sink)
        try:
            channel, _ = await self._conn.create_unix_connection(
                lambda: session, self.path, encoding=None
            )
            try:
                channel.write(encode_frame(DATA, request, dumps(config)))
                async with asyncio.timeout(timeout):
                    # The fork server closes the connection of a request it refuses.
                    await asyncio.wait([reply, session.closed], return_when=asyncio.FIRST_COMPLETED)
                if not reply.done():
                    raise ConnectionError("the fork server closed the request's channel")
                pid = reply.result()
            except BaseException:
                channel.close()  # the worker, if any, ends with its input
                raise
        finally:
            self._replies.pop(request, None)
        self.forked += 1
        worker = ForkedSSHTransport(self, slot, channel, session, pid)
        if pid in self._exit_codes:  # it was gone before its pid came back
            worker.exited(self._exit_codes.pop(pid))
        elif self.lost:
            worker.exited(None)
        else:
            self._workers[pid] = worker
        return worker

    def kill(self, pid: int) -> None:
        """Have the fork server kill the process group of its worker ``pid``."""
        if not self.lost and self._channel is not None and not self._channel.is_closing():
            self._channel.write(encode_frame(DATA, 0, dumps(["kill", pid])))

    def close_soon(self) -> None:
        if self._channel is not None:
            self._channel.close()

    async def close(self) -> None:
        """End the fork server (its input ends; not its workers) and wait
        until its session is closed."""
        self.close_soon()
        if self._channel is not None:
            await asyncio.shield(self.closed)


class _ForkedSession(StreamSession):
    """A forked worker's channel: its loss is reported with its exit status
    when that follows promptly (the fork server reports it separately)."""

    def __init__(self, sink: StreamSink) -> None:
        super().__init__(sink)
        self.exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chan: asyncssh.SSHClientChannel[bytes] | asyncssh.SSHUNIXChannel[bytes] | None = None

    def connection_made(
        self, chan: asyncssh.SSHClientChannel[bytes] | asyncssh.SSHUNIXChannel[bytes]
    ) -> None:
        self._chan = chan

    def eof_received(self) -> bool:
        # The worker's output ended: it is gone (a forwarder may keep the
        # channel half open, waiting for ours).
        if self._chan is not None:
            self._chan.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.exited.done():
            self.ended("the worker's channel closed")
            return
        timer = asyncio.get_running_loop().call_later(
            EXIT_STATUS_WAIT, self.ended, "the worker's channel closed"
        )

        def on_exit(_: object) -> None:
            timer.cancel()
            self.ended("the worker's channel closed")

        self.exited.add_done_callback(on_exit)


class ForkedSSHTransport(SSHTransport):
    """A worker forked by a :class:`RemoteForkServer`, over a streamlocal
    channel of the shared connection."""

    def __init__(
        self,
        server: RemoteForkServer,
        slot: Slot,
        channel: asyncssh.SSHUNIXChannel[bytes],
        session: _ForkedSession,
        pid: int,
    ) -> None:
        super().__init__(slot.target, slot, channel, session)
        self._server = server
        self._forked_session = session
        self._exit_code: int | None = None
        #: The worker's pid on the host.
        self.remote_pid = pid

    def exited(self, code: int | None) -> None:
        """Its exit code, from the fork server (None: it will not tell)."""
        self._exit_code = code
        if not self._forked_session.exited.done():
            self._forked_session.exited.set_result(None)

    def exit_status(self) -> int | None:
        return self._exit_code

    def diagnosis(self) -> str:
        text = f"on {self._target}, forked there as pid {self.remote_pid}"
        if self._exit_code is not None:
            text += f", exit status {self._exit_code}"
        tail = self._server.stderr.decode("utf-8", "replace").strip()
        return f"{text}; stderr: {tail!r}" if tail else text

    def stderr_tail(self) -> list[str]:
        return self._server.stderr.decode("utf-8", "replace").splitlines()[-20:]

    async def kill(self) -> None:
        self._server.kill(self.remote_pid)
        self._channel.close()
        await asyncio.shield(self._session.closed)
