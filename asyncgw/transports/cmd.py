"""cmd: a worker behind any command that yields a Python on stdin/stdout.

``cmd=ARGV`` runs ``ARGV -c LOADER`` (ARGV split like a shell would, but no
shell runs: nothing is interpreted twice). Convenience keys build ARGV for
the usual cases; ``python=`` names the interpreter inside (a command line):

=========================  ==============================================
``cmd=nice -n 5 python3``  ``nice -n 5 python3 -c LOADER``
``docker=CONTAINER``       ``docker exec -i CONTAINER python3 -c LOADER``
``kubectl=POD``            ``kubectl exec -i POD -- python3 -c LOADER``
``sudo`` / ``sudo=USER``   ``sudo -n [-u USER] PYTHON -c LOADER``
=========================  ==============================================

The command runs as a local child like a popen worker, so termination and
killing work the same: what dies with the command's process group dies.
The worker itself exits when its input ends, which is what reaches a
container or pod when the local client goes.

A command in between must pass the worker's bytes on as they come. One that
holds output back until a line ends (``srun`` without ``--unbuffered``)
lets the worker's greeting line through but never its first frame, which
ends no line: so when a command has not delivered the worker's first frame
within the start timeout, the error says what came, that the command may
buffer its output, and names srun's flag, rather than only that the gateway
did not start. ``docker exec -i`` and ``kubectl exec -i`` stream
bytes as they come (no terminal, no line discipline) and need nothing.
"""

from __future__ import annotations

import asyncio
import builtins
import shlex
import sys
from typing import TYPE_CHECKING

from .._bootstrap import python_argv
from .._errors import SpecError, TimeoutError
from ._base import DEFAULT_CONNECT_TIMEOUT, OpenContext, StreamSink
from .popen import PopenTransport, start_process

if TYPE_CHECKING:
    from .._spec import XSpec

__all__ = ["BUFFERING_HINT", "FirstOutput", "cmd_argv", "open_cmd", "start_timeout"]

#: Said when a command sent nothing before the start timeout.
BUFFERING_HINT = (
    "the command may hold the worker's output back until a line ends (its "
    "frames have none): srun needs --unbuffered (the slurm= key adds it)"
)


def start_timeout(spec: XSpec) -> float:
    """The start timeout of ``spec``: ``connect_timeout``, else the gateway's default."""
    return float(spec.connect_timeout or DEFAULT_CONNECT_TIMEOUT)


class FirstOutput:
    """A :class:`StreamSink` in front of the gateway's own until the worker
    has started: until the sink's ``hello`` future (the gateway router's:
    the worker's greeting and first frame) is done, or, for a sink without
    one, until the first bytes or the end of the output. Then the transport
    feeds the gateway's sink directly again (see :meth:`detach`).

    A line-buffering command lets the greeting through (it ends a line) and
    holds the first frame back: hence the wait for ``hello``, not for bytes.
    """

    def __init__(self, sink: StreamSink) -> None:
        self.sink = sink
        #: Set at each sign of progress (and by others, such as srun's queue news).
        self.event = asyncio.Event()
        self.received = 0
        self.ended = False
        hello = getattr(sink, "hello", None)
        self.hello: asyncio.Future[object] | None = (
            hello if isinstance(hello, asyncio.Future) else None
        )
        if self.hello is not None:
            self.hello.add_done_callback(lambda _: self.event.set())

    @property
    def started(self) -> bool:
        """Whether the worker is up, or its start over either way."""
        if self.hello is not None:
            return self.hello.done() or self.ended
        return self.received > 0 or self.ended

    def data_received(self, data: bytes | memoryview) -> None:
        self.received += len(data)
        self.event.set()
        self.sink.data_received(data)

    def connection_lost(self, reason: str) -> None:
        self.ended = True
        self.event.set()
        self.sink.connection_lost(reason)

    def pause_writing(self) -> None:
        self.sink.pause_writing()

    def resume_writing(self) -> None:
        self.sink.resume_writing()

    def detach(self, transport: PopenTransport) -> None:
        """From now on ``transport`` feeds the gateway's sink, not this one."""
        transport._protocol.sink = self.sink

    def silence(self, transport: PopenTransport) -> str:
        """What to say of a worker that did not start in time."""
        if self.received == 0:
            got = "the command sent nothing"
        else:
            got = f"the command sent {self.received} bytes and then nothing"
        return f"{got} ({transport.diagnosis()}); {BUFFERING_HINT}"

    async def wait(self, transport: PopenTransport, spec: XSpec, timeout: float) -> None:
        """Wait until the worker has started (see the class) for ``timeout``
        seconds; kill the command if cancelled or out of time.

        :raises TimeoutError: naming the buffering trap.
        """
        try:
            async with asyncio.timeout(timeout):
                while not self.started:
                    self.event.clear()
                    await self.event.wait()
        except BaseException as exc:
            message = self.silence(transport)
            await asyncio.shield(transport.kill())
            if isinstance(exc, builtins.TimeoutError):
                raise TimeoutError(f"{spec} did not start within {timeout}s: {message}") from None
            raise
        self.detach(transport)


def cmd_argv(spec: XSpec) -> list[str]:
    """The command line ``spec`` asks for, ending in the worker's loader.

    :raises SpecError: for an empty command.
    """
    if spec.cmd is not None:
        command = shlex.split(spec.cmd)
        if not command:
            raise SpecError(f"key 'cmd' of spec {str(spec)!r} is an empty command")
        return python_argv(command)
    if spec.docker is not None:
        prefix = ["docker", "exec", "-i", spec.docker]
        python = shlex.split(spec.python or "python3")
    elif spec.kubectl is not None:
        prefix = ["kubectl", "exec", "-i", spec.kubectl, "--"]
        python = shlex.split(spec.python or "python3")
    else:
        user = spec.sudo if isinstance(spec.sudo, str) else None
        prefix = ["sudo", "-n", *(["-u", user] if user else [])]
        python = shlex.split(spec.python) if spec.python else [sys.executable]
    return python_argv([*prefix, *python])


async def open_cmd(
    spec: XSpec, sink: StreamSink, bootstrap: bytes, context: OpenContext
) -> PopenTransport:
    """Run the command of ``spec``, send its Python the bootstrap and wait
    for the first bytes back (see the module: the buffering trap).

    :raises HostNotFound: if the command cannot be executed.
    :raises TimeoutError: if it sent nothing within the start timeout.
    """
    watch = FirstOutput(sink)
    transport = await start_process(cmd_argv(spec), spec, watch, bootstrap)
    await watch.wait(transport, spec, start_timeout(spec))
    return transport
