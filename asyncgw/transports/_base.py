"""The interface between a gateway and the byte stream it runs over.

A transport starts (or reaches) a remote interpreter, sends it the
bootstrap, and then carries bytes both ways. It pushes what it reads into a
:class:`StreamSink` — the gateway's router, the only reader (DESIGN rule 3)
— through callbacks rather than a read loop, so that a frame reaches the
channel that waits for it in the same loop iteration it arrived in.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .._group import Group
    from .._spec import XSpec
    from .forkserver import ForkServers
    from .pipereader import PipeReader

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "OpenContext", "StreamSink", "Transport", "TransportFactory"]

#: Seconds a new interpreter has to greet us unless the spec says otherwise
#: (``connect_timeout``); here, below the gateway, so transports that bound
#: their own start (cmd, slurm) use it without importing the gateway.
DEFAULT_CONNECT_TIMEOUT = 60.0


@dataclass(frozen=True)
class OpenContext:
    """What a transport may need besides its spec.

    :ivar group: the group the new gateway joins (a ``via=`` spec names one
        of its members).
    :ivar config: the worker's config, which the bootstrap carries (a
        transport that can start a worker without one uses it: popen's
        fork servers).
    :ivar forkservers: the group's fork servers, which the popen transport
        forks its workers from (None: always start afresh).
    """

    group: Group | None = None
    config: dict[str, Any] | None = None
    forkservers: ForkServers | None = None


class StreamSink(Protocol):
    """What a transport feeds. Called on the event loop thread only."""

    def data_received(self, data: bytes | memoryview) -> None:
        """Bytes read from the remote interpreter, in order: a view is valid
        only during the call (its buffer is read into again)."""

    def connection_lost(self, reason: str) -> None:
        """The stream ended; ``reason`` says how, for error messages."""

    def pause_writing(self) -> None:
        """The transport's write buffer is full: stop writing until
        :meth:`resume_writing`."""

    def resume_writing(self) -> None:
        """The write buffer has drained: writing may go on."""


class Transport(abc.ABC):
    """A started byte stream to one remote interpreter."""

    #: The local process id behind the stream, if there is one.
    pid: int | None = None

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Queue ``data``; never blocks (the sink is told to pause instead)."""

    @abc.abstractmethod
    def close_input(self) -> None:
        """Send end-of-file: the worker exits as soon as it reads it."""

    @abc.abstractmethod
    async def wait_closed(self) -> None:
        """Return once the remote interpreter is gone and resources freed.

        Cancelling the wait leaves the remote running; :meth:`kill` does not.
        """

    def diagnosis(self) -> str:
        """What is known of why the stream ended (exit code, last stderr)."""
        return ""

    def exit_status(self) -> int | None:
        """The interpreter's exit status once known, as :mod:`subprocess`
        gives it (``-N``: killed by signal N); None: not known, or not yet."""
        return None

    def stderr_tail(self) -> list[str]:
        """The last lines the interpreter wrote to its stderr, where this
        side sees them (oldest first)."""
        return []

    def stream_fd(self) -> int | None:
        """The descriptor of the non-blocking pipe or socket the worker
        reads, where the stream is one: the router may then write small
        frames to it from another thread (``Router.write_from_thread``).
        None: never."""
        return None

    def write_buffer_size(self) -> int:
        """Bytes written but not yet handed to the operating system."""
        return 0

    def thread_reader(self) -> PipeReader | None:
        """The reader of the worker's output pipe, if a thread waiting for
        a value may read it itself (``Router.read_for_thread``); None:
        only the loop reads."""
        return None

    @abc.abstractmethod
    async def kill(self) -> None:
        """End the remote interpreter now, escalating as needed, and wait
        until it is gone. Safe to call more than once."""


class TransportFactory(Protocol):
    """Starts a transport for ``spec``: starts the spec's interpreter with
    the bootstrap loader and writes ``bootstrap`` to it.

    :raises HostNotFound: if the interpreter or host cannot be reached.
    """

    async def __call__(
        self, spec: XSpec, sink: StreamSink, bootstrap: bytes, context: OpenContext
    ) -> Transport: ...
