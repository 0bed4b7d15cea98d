"""popen: a worker in a local subprocess, over its stdin and stdout.

The child gets a session of its own, so a Ctrl-C in the terminal reaches the
caller (who then terminates its gateways) rather than every worker at
once, and so that killing takes the worker's whole process group — any
process remote code started — with it. The child's stderr is forwarded to
our ``sys.stderr``; its last lines explain a failed start.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shlex
import signal
import sys
from collections import deque
from typing import TYPE_CHECKING, cast

from .._bootstrap import bootstrap_payload, python_argv
from .._errors import HostNotFound
from .._fdlimit import original_soft_limit
from ._base import OpenContext, StreamSink, Transport
from .pipereader import PipeReader
from .pipewriter import PipeWriter

if TYPE_CHECKING:
    from .._spec import XSpec

__all__ = ["PopenTransport", "open_popen", "open_popen_worker", "popen_argv", "start_process"]

#: Seconds between SIGTERM and SIGKILL when killing.
KILL_GRACE = 0.2
#: Lines of the worker's stderr kept to tell why it ended.
STDERR_LINES = 20
#: Seconds to wait, once the worker's output ends, for its exit status
#: (so the loss can be reported with it).
EXIT_STATUS_WAIT = 0.5


class _Protocol(asyncio.SubprocessProtocol):
    def __init__(self, sink: StreamSink) -> None:
        self.sink = sink
        self.exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.stderr_tail: deque[bytes] = deque(maxlen=20)

    def read_output(self, fd: int) -> None:
        """Read the worker's output from pipe ``fd`` (ours from now on) into
        a reused buffer, not through asyncio's pipe transport (see
        :mod:`.pipereader`)."""
        # Large payloads straight into the sink's buffers, unless a subclass
        # looks at the output first (srun's).
        direct = type(self).pipe_data_received is _Protocol.pipe_data_received
        #: Only the sink sees the output: a thread may read it for the sink.
        self.direct = direct
        self.output = PipeReader(
            fd,
            lambda data: self.pipe_data_received(1, data),
            lambda error: self.pipe_connection_lost(1, error),
            getattr(self.sink, "read_buffers", None) if direct else None,
            getattr(self.sink, "read_filled", None) if direct else None,
        )

    def pipe_data_received(self, fd: int, data: bytes | memoryview) -> None:
        if fd == 1:
            self.sink.data_received(data)
        else:
            self.stderr_tail.append(bytes(data))
            _forward_stderr(bytes(data))

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd != 1:
            return
        # Report the loss with the exit status when it follows promptly; the
        # output is read to its end first, so no frame sent before exit is lost.
        if self.exited.done():
            self._report_lost()
        else:
            loop = asyncio.get_running_loop()
            timer = loop.call_later(EXIT_STATUS_WAIT, self._report_lost)

            def on_exit(_: object) -> None:
                timer.cancel()
                self._report_lost()

            self.exited.add_done_callback(on_exit)

    def _report_lost(self) -> None:
        self.sink.connection_lost("the worker's output ended")

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def pause_writing(self) -> None:
        self.sink.pause_writing()

    def resume_writing(self) -> None:
        self.sink.resume_writing()


#: Pipe capacity asked of Linux (its default is 64 KiB): with asyncio's pipe
#: writer doing one write per loop pass, capacity bounds bulk throughput.
PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def _enlarge_pipe(pipe: asyncio.BaseTransport | int | None) -> None:
    """Ask for :data:`PIPE_SIZE` of a pipe (its transport, or its fd)."""
    if pipe is None or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError, ValueError):
        fd = pipe if isinstance(pipe, int) else pipe.get_extra_info("pipe").fileno()
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)


def _forward_stderr(data: bytes) -> None:
    stream = sys.stderr
    if stream is None:  # pythonw, or stderr closed
        return
    stream.write(data.decode("utf-8", "replace"))
    stream.flush()


class PopenTransport(Transport):
    def __init__(self, transport: asyncio.SubprocessTransport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self.pid = transport.get_pid()
        # uvloop's pipe transports are not asyncio.WriteTransport subclasses.
        self._stdin = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))
        _enlarge_pipe(transport.get_pipe_transport(0))
        # asyncio's pipe transport copies what the pipe does not take at
        # once; the writer keeps the bytes objects instead (see .pipewriter).
        # The transport keeps the pipe: it closes it, once the writer is done.
        self._writer: PipeWriter | None = None
        fd = self.stream_fd()
        loop = asyncio.get_running_loop()
        if (
            fd is not None
            and self._stdin.get_extra_info("pipe") is not None
            and type(loop).__module__.startswith("asyncio")  # uvloop: its own transport
            and not os.get_blocking(fd)
        ):
            self._writer = PipeWriter(fd, protocol.pause_writing, protocol.resume_writing)

    def write(self, data: bytes) -> None:
        if self._stdin.is_closing():
            return  # closed at termination (uvloop raises here): the end is reported anyway
        if self._writer is not None:
            self._writer.write(data)  # nothing after close_input: closed, or draining to close
        else:
            self._stdin.write(data)

    def stream_fd(self) -> int | None:
        # asyncio's pipe transports name their pipe; uvloop's a socket (it
        # connects subprocesses through socket pairs).
        stream = self._stdin.get_extra_info("pipe") or self._stdin.get_extra_info("socket")
        try:
            return stream.fileno() if stream is not None else None
        except (ValueError, OSError):  # already closed: the worker is gone
            return None

    def thread_reader(self) -> PipeReader | None:
        protocol = self._protocol
        return protocol.output if getattr(protocol, "direct", False) else None

    def write_buffer_size(self) -> int:
        size = self._stdin.get_write_buffer_size()
        return size if self._writer is None else size + self._writer.size

    def close_input(self) -> None:
        if self._writer is None:
            self._stdin.close()
        else:  # what was written first, then the end of file
            self._writer.when_drained(self._close_stdin)

    def _close_stdin(self) -> None:
        self.stop_writing()
        self._stdin.close()

    def diagnosis(self) -> str:
        code = self._transport.get_returncode()
        tail = b"".join(self._protocol.stderr_tail).decode("utf-8", "replace")[-2000:]
        status = "still running" if code is None else f"exit status {code}"
        return f"{status}; stderr: {tail.strip()!r}" if tail.strip() else status

    def exit_status(self) -> int | None:
        if not getattr(self._transport, "status_known", True):  # a forked worker's, unknown
            return None
        return self._transport.get_returncode()

    def stderr_tail(self) -> list[str]:
        text = b"".join(self._protocol.stderr_tail).decode("utf-8", "replace")
        return text.splitlines()[-STDERR_LINES:]

    def stop_writing(self) -> None:
        """Before the pipe is closed: the writer lets go of it."""
        if self._writer is not None:
            self._writer.close()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._protocol.exited)
        self.stop_writing()
        self._transport.close()

    async def kill(self) -> None:
        self._signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(KILL_GRACE):
                await asyncio.shield(self._protocol.exited)
        except TimeoutError:
            pass
        # The group may outlive the worker: remote code may have started children.
        self._signal(signal.SIGKILL)
        await asyncio.shield(self._protocol.exited)
        self.stop_writing()
        self._transport.close()

    def _signal(self, signum: int) -> None:
        assert self.pid is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)


def popen_argv(spec: XSpec) -> list[str]:
    """``python=`` may be a command line (``python=uv run python``)."""
    return python_argv(shlex.split(spec.python) if spec.python else [sys.executable])


async def open_popen(
    spec: XSpec, sink: StreamSink, bootstrap: bytes, context: OpenContext
) -> PopenTransport:
    """Start ``spec``'s interpreter as a child and send it ``bootstrap``.

    :raises HostNotFound: if the interpreter cannot be executed.
    """
    return await start_process(popen_argv(spec), spec, sink, bootstrap)


async def open_popen_worker(spec: XSpec, sink: StreamSink, context: OpenContext) -> PopenTransport:
    """Start the worker of ``context.config`` for ``spec``: forked from the
    group's fork server for its interpreter if it has a working one (see
    :mod:`.forkserver`), else started afresh with a bootstrap that gives the
    worker back the descriptor limit asyncgw raised here (see
    :mod:`asyncgw._fdlimit`). Cancelling kills what was started.

    :raises HostNotFound: if the interpreter cannot be executed.
    """
    assert context.config is not None
    if context.forkservers is not None:
        forked = await context.forkservers.fork(spec, context.config, sink)
        if forked is not None:
            return forked
    bootstrap = bootstrap_payload(context.config, nofile=original_soft_limit())
    return await start_process(popen_argv(spec), spec, sink, bootstrap)


async def start_process(
    argv: list[str],
    spec: XSpec,
    sink: StreamSink,
    bootstrap: bytes,
    protocol_class: type[_Protocol] = _Protocol,
) -> PopenTransport:
    """Run ``argv`` (which must yield a worker's loader on its stdin/stdout)
    as a child in a session of its own and send it ``bootstrap``.
    ``protocol_class`` reads the child's pipes (a subclass may read stderr
    first: srun's, for the slurm transport).

    :raises HostNotFound: if ``argv[0]`` cannot be executed.
    """
    loop = asyncio.get_running_loop()
    output, output_end = os.pipe()  # read by PipeReader, not by asyncio
    _enlarge_pipe(output)
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: protocol_class(sink),
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=output_end,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        os.close(output)
        raise HostNotFound(f"cannot start {argv[0]!r} for spec {str(spec)!r}: {exc}") from exc
    except BaseException:
        os.close(output)
        raise
    finally:
        os.close(output_end)  # the child's now: its exit ends our reading
    popen: PopenTransport | None = None
    try:
        protocol.read_output(output)
        popen = PopenTransport(transport, protocol)
        popen.write(bootstrap)
    except BaseException:
        if popen is not None:
            popen.stop_writing()
        transport.kill()  # leave no half-started child behind
        transport.close()
        raise
    return popen
