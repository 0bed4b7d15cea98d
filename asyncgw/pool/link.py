"""One gateway as the pool sees it: the far-side task loop and its chunks.

A :class:`Link` starts :mod:`asyncgw.remote.pool` on its gateway with
one ``remote_exec``, sends it function definitions and chunks, and hands
every answer to the scheduler. It keeps the chunks it has out
(``inflight``), so that when the gateway is lost the scheduler knows
which items to send elsewhere.

Invariants: messages leave in the order they were given (a definition
before the chunks that use it); a send never waits on the caller (it is
queued when the channel's window is full, and a task writes the queue);
the receiver reports the link's end exactly once, whatever the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._bootstrap import module_source
from .._errors import ChannelClosed

if TYPE_CHECKING:
    from .._gateway import Gateway
    from .jobs import Job

__all__ = ["FARSIDE_SOURCE", "Chunk", "Link"]

#: The far side's source, shipped by ``remote_exec`` to every gateway.
FARSIDE_SOURCE = module_source("remote/pool")


class Chunk:
    """Items sent together to one gateway.

    :ivar number: its id in the messages (unique per pool).
    :ivar segments: ``(job, indices)`` runs of items, in order (``indices``
        a ``range`` for items sent the first time).
    :ivar size: how many items in all.
    :ivar timer: the per-task timeout's handle, if the job has one.
    """

    __slots__ = ("function", "number", "segments", "size", "timer")

    def __init__(
        self, number: int, function: int, segments: list[tuple[Job, Sequence[int]]]
    ) -> None:
        self.number = number
        self.function = function
        self.segments = segments
        self.size = sum(len(indices) for _, indices in segments)
        self.timer: asyncio.TimerHandle | None = None

    def entries(self) -> list[tuple[Job, int]]:
        """``(job, index)`` of each item, in order (for the rare paths)."""
        return [(job, index) for job, indices in self.segments for index in indices]


class Link:
    """The pool's task loop on one gateway.

    :param on_answer: called with ``(link, message)`` for each answer.
    :param on_end: called once with ``(link, error)`` when the loop ends
        (``error`` None: the channel was closed by this side).
    """

    def __init__(
        self,
        gateway: Gateway,
        on_answer: Callable[[Link, Any], None],
        on_end: Callable[[Link, BaseException | None], None],
    ) -> None:
        self.gateway = gateway
        self.channel = gateway.remote_exec(FARSIDE_SOURCE)
        self.defined: set[int] = set()
        self.inflight: dict[int, Chunk] = {}
        self.alive = True
        self._on_answer = on_answer
        self._on_end = on_end
        self._outbox: deque[bytes] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._reader = asyncio.ensure_future(self._read())

    def __repr__(self) -> str:
        return f"<Link {self.gateway.id} {len(self.inflight)} chunks out>"

    def encode(self, message: object) -> bytes:
        """``message`` as it will be written.

        :raises DumpError: for a value the wire cannot carry.
        """
        return self.channel.encode(message)

    def send(self, payload: bytes) -> None:
        """Send an encoded message now, or as soon as the window allows."""
        if not self.alive:
            return
        if not self._outbox:
            try:
                if self.channel.send_encoded_nowait(payload):
                    return
            except Exception:  # lost: the reader reports it
                return
        self._outbox.append(payload)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        with contextlib.suppress(Exception):  # lost: the reader reports it
            while self._outbox:
                await self.channel.send_encoded(self._outbox[0])
                self._outbox.popleft()

    async def _read(self) -> None:
        error: BaseException | None = None
        try:
            while True:
                self._on_answer(self, await self.channel.receive())
        except ChannelClosed as exc:
            error = None if self._closing else exc
        except Exception as exc:  # GatewayLost, RemoteError (the loop failed), ...
            error = exc
        self.alive = False
        if self._writer is not None:
            self._writer.cancel()
        self._on_end(self, error)

    async def close(self) -> None:
        """End the far-side loop (it finishes the chunk it runs) and wait
        for the reader. Cancelling the wait leaves the loop ending."""
        self._closing = True
        if self.alive:
            self.channel.close()
        await asyncio.shield(self._reader)
