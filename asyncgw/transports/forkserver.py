"""Fork servers: popen workers forked from an interpreter started once.

A :class:`~asyncgw.Group` asked for several popen gateways of one
interpreter at once starts a fork server for it (``_forkserver`` runs
there) and has every popen worker of that interpreter forked from it, for
as long as the group lives: a fork costs about 2 ms where a fresh
interpreter costs tens. A forked worker is indistinguishable to its
gateway: its own session and process group, pipes for stdin, stdout and
stderr, the same config applied after start. Its parent is the fork
server, which reaps it and reports its exit status; should the fork server
die first, a pidfd tells when the worker is gone.

The fork server is a strategy of the popen transport, not of the group: a
group makes one :class:`ForkServers` registry, tells it which specs a batch
will start (:meth:`ForkServers.start_for`) and closes it; the popen
transport forks from it (``popen.open_popen_worker``) and starts afresh when
it has no server for the interpreter, or its server broke.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .._bootstrap import bootstrap_payload
from .._fdlimit import is_exhaustion, original_soft_limit
from .._tasks import run_all
from .._wire import (
    CLOSE_ERROR,
    DATA,
    HEADER,
    HELLO,
    MAGIC,
    FrameDecoder,
    dumps,
    encode_frame,
    loads,
)
from ._base import StreamSink
from .popen import PopenTransport, _Protocol, popen_argv

if TYPE_CHECKING:
    from .._spec import XSpec

__all__ = ["ForkServer", "ForkServers", "forkserver_key", "read_greeting"]

log = logging.getLogger("asyncgw")

#: Seconds a fork server has to greet us before its interpreter is given up.
START_TIMEOUT = 30.0
#: Seconds a closed fork server has to exit before it is killed.
EXIT_TIMEOUT = 5.0
#: Fork requests sent ahead of their replies at most: enough to keep the
#: fork server busy; each holds 3 more descriptors (the worker's ends of
#: its pipes) until it is sent, and a few hundred bytes of socket buffer.
IN_FLIGHT = 16


class ForkServers:
    """A group's fork servers, one per popen interpreter (see the module
    doc). Made without a running loop (the blocking facade makes groups in
    its callers' threads)."""

    def __init__(self) -> None:
        # popen interpreter -> its fork server (None if it could not start)
        self._servers: dict[tuple[str, ...], asyncio.Task[ForkServer | None]] = {}

    def start_for(self, specs: list[XSpec], preload: list[str]) -> list[tuple[str, ...]]:
        """Start a fork server, importing ``preload``, for each interpreter
        that several of ``specs`` start as popen workers (later popen
        workers of it fork too); return the interpreters whose fork servers
        were started, for :meth:`close` should the batch fail. A single
        start never starts one: the one-gateway case pays nothing extra."""
        wanted = Counter(key for spec in specs if (key := forkserver_key(spec)))
        started = [key for key, count in wanted.items() if count > 1 and key not in self._servers]
        for key in started:
            self._servers[key] = asyncio.ensure_future(_start_forkserver(key, list(preload)))
        return started

    def adopt(self, other: ForkServers) -> list[tuple[str, ...]]:
        """Take over the fork servers of ``other`` (started ahead of the
        group, by the pytest-xdist plugin) for the interpreters that have
        none here; return their interpreters. ``other`` keeps the rest, to
        close."""
        taken = [key for key in other._servers if key not in self._servers]
        for key in taken:
            self._servers[key] = other._servers.pop(key)
        return taken

    async def fork(
        self, spec: XSpec, config: dict[str, Any], sink: StreamSink
    ) -> PopenTransport | None:
        """The worker for ``spec`` forked from its interpreter's fork server,
        told ``config`` directly (no bootstrap is made, which for many
        gateways started at once is most of their memory); None if there is
        no working fork server for it: start it afresh then. Cancelling
        kills what was forked.

        :raises OSError: if descriptors ran out here (a fresh start needs as
            many: see :mod:`asyncgw._fdlimit`).
        """
        key = forkserver_key(spec)
        task = self._servers.get(key) if key else None
        if task is None:
            return None
        server = await asyncio.shield(task)
        if server is None or server.lost:
            return None
        try:
            return await server.fork(config, sink)
        except (OSError, ConnectionError) as exc:  # the fork server broke: start afresh
            if is_exhaustion(exc):
                raise
            if not server.failure_logged:  # once, not once per waiting worker
                server.failure_logged = True
                log.warning("fork server for %s failed (%s); starting workers afresh", spec, exc)
            return None

    async def close(self, keys: list[tuple[str, ...]] | None = None) -> None:
        """Close the fork servers of ``keys`` (default: all); not their
        workers. Cancelling kills them."""
        keys = list(self._servers) if keys is None else keys
        tasks = [self._servers.pop(key) for key in keys if key in self._servers]
        try:
            servers = [server for server in await run_all(tasks) if server is not None]
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        try:
            await run_all(server.close() for server in servers)
        except BaseException:
            await asyncio.shield(run_all(server.close(kill=True) for server in servers))
            raise


async def _start_forkserver(argv: tuple[str, ...], preload: list[str]) -> ForkServer | None:
    """A fork server for ``argv``, or None: its workers then start afresh
    (and fail, if they must, with the errors of a direct start)."""
    try:
        return await ForkServer.start(list(argv), preload)
    except (OSError, ConnectionError, TimeoutError) as exc:
        log.debug("no fork server for %s: %s", argv[0], exc)
        return None


class ForkServer:
    """One started interpreter that forks workers; see the module doc."""

    def __init__(self, process: asyncio.subprocess.Process, control: socket.socket) -> None:
        self._process = process
        self._control = control
        self._loop = asyncio.get_running_loop()
        self._decoder = FrameDecoder()
        # Requests in flight (by id): the fork server forks the next one
        # while we read the last one's reply, rather than waiting for us.
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._replies: dict[int, asyncio.Future[int]] = {}
        self._requests = 0
        self._children: dict[int, _ForkedProcess] = {}
        self._exit_codes: dict[int, int] = {}  # reaped before we knew the pid
        self.lost = False
        #: Set by the first gateway that logs this server's failure (one
        #: warning for all the workers that then start afresh).
        self.failure_logged = False

    @classmethod
    async def start(cls, argv: list[str], preload: list[str] | None = None) -> ForkServer:
        """Start ``argv`` (a ``python_argv``) as a fork server that has
        imported the modules of ``preload``.

        :raises OSError: if it cannot be executed.
        :raises ConnectionError: if it does not come up as a fork server.
        """
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=theirs.fileno(),
                stdout=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        server = cls(process, ours)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await server._greet(preload or [])
        except BaseException:
            await server.close(kill=True)
            raise
        return server

    async def _greet(self, preload: list[str]) -> None:
        """Send the bootstrap; wait for MAGIC and a HELLO that says "fork server"
        (an interpreter that is something else must not be sent requests)."""
        loop = self._loop
        await loop.sock_sendall(
            self._control,
            # Its workers inherit the limit it sets (see _fdlimit).
            bootstrap_payload({"preload": preload}, forkserver=True, nofile=original_soft_limit()),
        )
        received = b""
        while (greeting := read_greeting(received)) is None:
            chunk = await loop.sock_recv(self._control, 4096)
            if not chunk:
                raise ConnectionError("the interpreter did not answer as a fork server")
            received += chunk
        self._decoder.feed(greeting[1])  # past the HELLO
        loop.add_reader(self._control.fileno(), self._on_readable)

    # -- forking

    async def fork(self, config: dict[str, Any], sink: StreamSink) -> PopenTransport:
        """A worker with ``config``, forked; cancelling kills it."""
        task = asyncio.ensure_future(self._fork(config, sink))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await (await task).kill()
            raise

    async def _fork(self, config: dict[str, Any], sink: StreamSink) -> PopenTransport:
        async with self._slots:
            if self.lost:
                raise ConnectionError("the fork server is gone")
            # Made here, not earlier: only the requests in flight hold the
            # workers' ends of their pipes, so a group of N workers needs 3
            # descriptors a worker and a few more, not 6 a worker at its start.
            theirs, ours = _worker_pipes()
            self._requests += 1
            request = self._requests
            reply = self._replies[request] = self._loop.create_future()
            try:
                try:
                    frame = encode_frame(DATA, request, dumps(config))
                    socket.send_fds(self._control, [frame], theirs)  # one message: both
                finally:
                    for fd in theirs:  # the fork server has its own copies
                        os.close(fd)
                pid = await reply
            except BaseException:
                for fd in ours:
                    os.close(fd)
                raise
            finally:
                self._replies.pop(request, None)
        process = _ForkedProcess(pid)
        self._children[pid] = process
        if pid in self._exit_codes:  # it was gone before its pid came back
            process.exited(self._exit_codes.pop(pid))
        return await process.connect(sink, ours)

    def _on_readable(self) -> None:
        try:
            data = self._control.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._on_lost()
            return
        deliver(self._decoder.feed(data), self._children, self._exit_codes, self._replies)

    def _on_lost(self) -> None:
        if self.lost:
            return
        self.lost = True
        self._loop.remove_reader(self._control.fileno())
        for reply in self._replies.values():
            if not reply.done():
                reply.set_exception(ConnectionError("the fork server is gone"))
        for child in self._children.values():
            child.watch_pidfd()  # nobody reports their exit now
        self._children.clear()

    async def close(self, *, kill: bool = False) -> None:
        """End the fork server (not its workers) and wait until it is gone."""
        self._on_lost()
        self._control.close()
        if kill:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        try:
            async with asyncio.timeout(EXIT_TIMEOUT):
                await self._process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()


class _ForkedProcess:
    """What :class:`PopenTransport` needs of an ``asyncio.SubprocessTransport``,
    for a process that is not our child."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._returncode: int | None = None
        self.status_known = True
        self._protocol: _Protocol | None = None
        self._pipes: dict[int, asyncio.BaseTransport] = {}
        self._pidfd: int | None = None

    async def connect(self, sink: StreamSink, fds: list[int]) -> PopenTransport:
        loop = asyncio.get_running_loop()
        protocol = self._protocol = _Protocol(sink)
        stdin, output, stderr = fds
        pipes = [os.fdopen(stdin, "wb", buffering=0), os.fdopen(stderr, "rb", buffering=0)]
        try:
            self._pipes[0], _ = await loop.connect_write_pipe(
                lambda: _WritePipe(protocol), pipes[0]
            )
            self._pipes[2], _ = await loop.connect_read_pipe(
                functools.partial(_ReadPipe, protocol, 2), pipes[1]
            )
            protocol.read_output(output)  # see popen's _Protocol
        except BaseException:
            for pipe in pipes:
                pipe.close()
            with contextlib.suppress(OSError):  # read_output owns it once it ran
                os.close(output)
            raise
        if self._returncode is not None:
            protocol.process_exited()
        return PopenTransport(self, protocol)  # type: ignore[arg-type]

    def exited(self, code: int, known: bool = True) -> None:
        self._returncode = code
        #: False when the kernel told of the exit, not its status (-1 then).
        self.status_known = known
        self._stop_watching()
        if self._protocol is not None:
            self._protocol.process_exited()

    def watch_pidfd(self) -> None:
        """Learn of the exit from the kernel (the fork server cannot tell us)."""
        if self._returncode is not None:
            return
        try:
            self._pidfd = os.pidfd_open(self._pid)
        except ProcessLookupError:
            self.exited(-1, False)
            return
        asyncio.get_running_loop().add_reader(self._pidfd, self.exited, -1, False)

    def _stop_watching(self) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    # -- as asyncio.SubprocessTransport

    def get_pid(self) -> int:
        return self._pid

    def get_returncode(self) -> int | None:
        return self._returncode

    def get_pipe_transport(self, fd: int) -> asyncio.BaseTransport | None:
        return self._pipes.get(fd)

    def close(self) -> None:
        for pipe in self._pipes.values():
            pipe.close()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)


class _WritePipe(asyncio.Protocol):
    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    def pause_writing(self) -> None:
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()


class _ReadPipe(asyncio.Protocol):
    def __init__(self, protocol: _Protocol, fd: int) -> None:
        self._protocol = protocol
        self._fd = fd

    def data_received(self, data: bytes) -> None:
        self._protocol.pipe_data_received(self._fd, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._protocol.pipe_connection_lost(self._fd, exc)


def _worker_pipes() -> tuple[list[int], list[int]]:
    """Pipes for a worker's stdin, stdout and stderr: (its ends, ours)."""
    pipes: list[tuple[int, int]] = []
    try:
        for _ in range(3):
            pipes.append(os.pipe())  # noqa: PERF401 - keeps those made on error
    except BaseException:  # out of descriptors, say: leak none
        for read_end, write_end in pipes:
            os.close(read_end)
            os.close(write_end)
        raise
    (stdin_r, stdin_w), (out_r, out_w), (err_r, err_w) = pipes
    return [stdin_r, out_w, err_w], [stdin_w, out_r, err_r]


#: The largest HELLO a fork server sends (its pid, and where it listens).
MAX_GREETING = 4096


def deliver(
    frames: Iterable[tuple[int, int, bytes]],
    workers: dict[int, Any],
    exit_codes: dict[int, int],
    replies: dict[int, asyncio.Future[int]],
) -> None:
    """Hand a fork server's frames on, for both of its clients (here and
    ``sshfork``): channel 0 reports a worker's end (to ``workers[pid]``, or
    kept in ``exit_codes`` until its pid is known); any other channel
    answers the fork request of that id with the pid, or its refusal."""
    for msgtype, ident, payload in frames:
        if ident == 0:  # a worker ended
            pid, code = loads(payload)
            worker = workers.pop(pid, None)
            if worker is None:
                exit_codes[pid] = code
            else:
                worker.exited(code)
        elif (reply := replies.get(ident)) is not None and not reply.done():
            if msgtype == CLOSE_ERROR:
                message = payload.decode("utf-8", "replace")
                reply.set_exception(OSError(f"the fork server cannot fork: {message}"))
            else:
                reply.set_result(loads(payload))


def read_greeting(received: bytes) -> tuple[dict[str, Any], bytes] | None:
    """A fork server's greeting (``MAGIC``, then a HELLO that says "fork
    server") at the start of ``received``: its HELLO and the bytes after it;
    None while incomplete. Shared with the ssh transport's fork servers.

    :raises ConnectionError: if the bytes are something else (an
        interpreter that is not a fork server must not be sent requests).
    """
    refused = ConnectionError("the interpreter did not answer as a fork server")
    if not received.startswith(MAGIC[: len(received)]):
        raise refused
    if len(received) < len(MAGIC) + HEADER.size:
        return None
    msgtype, _, length = HEADER.unpack_from(received, len(MAGIC))
    end = len(MAGIC) + HEADER.size + length
    if msgtype != HELLO or length > MAX_GREETING:
        raise refused
    if len(received) < end:
        return None
    try:
        hello = loads(received[len(MAGIC) + HEADER.size : end])
        assert isinstance(hello, dict) and hello["forkserver"] is True
    except Exception:
        raise refused from None
    return hello, received[end:]


def forkserver_key(spec: XSpec) -> tuple[str, ...] | None:
    """Specs with equal keys can share a fork server; None: never forked."""
    if spec.transport != "popen":
        return None
    return tuple(popen_argv(spec))
