"""The scheduler: items to whichever gateway is free, answers to their jobs.

Jobs wait in one FIFO queue. Each :class:`~asyncgw.pool.link.Link` may
have up to ``window`` chunks out (one running on the far side, the others
queued behind it, so that a gateway never waits for the next chunk); as
soon as an answer frees a place, the next chunk goes to that gateway. So
a slow gateway takes fewer chunks and holds nobody up, and an ordered
``map`` still gets its order back from the job's slots.

Failures:

- a task that raises settles its own item with :class:`RemoteError`;
- a chunk with a value the wire cannot carry fails those items with
  :class:`DumpError` and sends the others;
- a task with a timeout goes alone, to a gateway with nothing out, and
  its clock starts then; when it runs out the item fails with
  :class:`TimeoutError` and the far side is told (``asyncgw_cancelled()``
  turns true there); the gateway stays busy until the function returns;
- a gateway lost with chunks out: their unsettled items go back to the
  front of the queue, each at most ``retries`` times (at-least-once: a
  task may have run, or half run, on the lost gateway), then fail with
  :class:`GatewayLost`; with no gateway left, everything waiting fails so.

Invariants: runs on one event loop, never blocks it, never awaits (sends
that find the window full are queued by the link); every job in
``active`` settles, whatever happens to the gateways.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._errors import GatewayLost, RemoteError, TimeoutError
from .._tasks import run_all
from .._wire import DumpError, dumps
from ..remote.pool import pack, unpack
from .chunking import ChunkSizer
from .jobs import MODE_ONE, PENDING, Job
from .link import Chunk, Link

if TYPE_CHECKING:
    from .._gateway import Gateway

__all__ = ["Scheduler"]

_CHUNK, _CANCEL = 1, 2
_SKIPPED = 2


def remote_error(formatted: str) -> RemoteError:
    """A :class:`RemoteError` for a far-side traceback, with the type name
    of its exception (its last line's ``Name:``)."""
    last = formatted.strip().splitlines()[-1:] or [""]
    name = last[0].partition(":")[0].strip()
    dotted = name.replace(".", "_")
    return RemoteError(formatted, name.rpartition(".")[2] if dotted.isidentifier() else None)


def _load(link: Link) -> int:
    return len(link.inflight) if link.alive else 1 << 30


class Scheduler:
    """Queue, gateways and chunks of one pool.

    :param window: chunks out per gateway at most.
    :param retries: times an item is sent again after its gateway was lost.
    """

    def __init__(self, window: int = 2, retries: int = 1) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window = window
        self.retries = retries
        self.links: list[Link] = []
        self.queue: deque[Job] = deque()
        self.waiting = 0  # items queued and not sent
        self.active: set[Job] = set()
        self.idle = asyncio.Event()
        self.idle.set()
        self.sizer = ChunkSizer()
        self.closing = False
        self._numbers = itertools.count()
        self._dispatching = False
        self._ending: list[asyncio.Future[None]] = []

    # -- gateways

    def add_gateway(self, gateway: Gateway) -> Link:
        """Start the task loop on ``gateway`` and give it work."""
        link = Link(gateway, self._on_answer, self._on_end)
        self.links.append(link)
        self.dispatch()
        return link

    async def close_links(self) -> None:
        """End every far-side loop (waits for their readers)."""
        await run_all(link.close() for link in list(self.links))

    # -- jobs

    def add(self, job: Job) -> None:
        """Queue every item of ``job``."""
        if self.closing:
            raise RuntimeError("the pool is closed: no new work")
        job.on_finished = self._finished
        if job.unsettled == 0:
            job.finish()
            return
        self.active.add(job)
        self.idle.clear()
        self.queue.append(job)
        self.waiting += job.waiting()
        if not self.links:
            self._fail_waiting("the pool has no gateway")
        self.dispatch()

    def _finished(self, job: Job) -> None:
        self.active.discard(job)
        if not self.active:
            self.idle.set()

    def cancel(self, job: Job) -> None:
        """Cancel what is left of ``job``: items not sent never run; items
        sent are skipped if they have not started; a running one is told."""
        if job.unsettled == 0:
            return
        self.waiting -= len(job.drop_waiting())
        job.cancel_all()
        for link in self.links:
            for chunk in list(link.inflight.values()):
                if all(owner is not job for owner, _ in chunk.segments):
                    continue
                entries = chunk.entries()
                positions = [pos for pos, (owner, _) in enumerate(entries) if owner is job]
                if positions:
                    link.send(link.encode((_CANCEL, chunk.number, positions)))

    def cancel_unsent(self) -> None:
        """Cancel every item not sent yet (sent ones go on), as
        ``Executor.shutdown(cancel_futures=True)`` does."""
        error = asyncio.CancelledError()
        while self.queue:
            job = self.queue.popleft()
            dropped = job.drop_waiting()
            self.waiting -= len(dropped)
            for index in dropped:
                job.settle(index, False, error)
            job.batch_done()

    # -- dispatching

    def dispatch(self) -> None:
        """Give gateways with room the next chunks, the least busy first."""
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self.queue:
                # The least busy gateway first: an idle one never waits
                # while another has a second chunk queued.
                link = min(self.links, key=_load, default=None)
                if link is None or _load(link) >= self.window:
                    break
                chunk = self._take(link)
                if chunk is None or not self._send(link, chunk):
                    break
        finally:
            self._dispatching = False

    def _head(self) -> Job | None:
        queue = self.queue
        while queue and (queue[0].cancelled or not queue[0].waiting()):
            job = queue.popleft()
            if job.cancelled:  # its items were settled already
                self.waiting -= len(job.drop_waiting())
        return queue[0] if queue else None

    def _take(self, link: Link) -> Chunk | None:
        """The next chunk for ``link``, or None if there is none for it."""
        while True:
            job = self._head()
            if job is None:
                return None
            if job.timeout is not None:
                if link.inflight:  # its clock must start when it starts
                    return None
                size = 1
            elif job.chunksize is not None:
                size = job.chunksize
            else:
                size = self.sizer.size(
                    job.function.number, self.waiting, len(self.links), job.measured
                )
            first = job
            segments: list[tuple[Job, Sequence[int]]] = []
            taken = 0
            while taken < size:
                if not job.waiting():
                    following = self._head()
                    if (
                        following is None
                        or following.function is not first.function
                        or following.mode != first.mode
                        or following.timeout is not None
                        or following.chunksize != first.chunksize
                    ):
                        break
                    job = following
                indices = job.take(size - taken)
                self.waiting -= len(indices)
                taken += len(indices)
                if job.checks_start:
                    indices = [index for index in indices if job.start(index)]
                    if not indices:
                        job.batch_done()
                        continue
                segments.append((job, indices))
            if segments:
                return Chunk(next(self._numbers), first.function.number, segments)

    def _send(self, link: Link, chunk: Chunk) -> bool:
        """Send ``chunk`` on ``link``; False if the link could not take it
        (its items are back in the queue)."""
        first = chunk.segments[0][0]
        function = first.function
        try:
            if function.number not in link.defined:
                link.send(link.encode(function.definition))
                link.defined.add(function.number)
            payload = self._encode(link, chunk, first.mode)
        except (GatewayLost, OSError):  # the link has just ended: its reader will say so
            self._requeue(chunk.entries())
            return False
        if payload is None:
            return True
        link.inflight[chunk.number] = chunk
        link.send(payload)
        if first.timeout is not None:
            loop = asyncio.get_running_loop()
            chunk.timer = loop.call_later(first.timeout, self._timed_out, link, chunk)
        return True

    def _encode(self, link: Link, chunk: Chunk, mode: int) -> bytes | None:
        """The chunk's message; items the wire cannot carry fail with
        :class:`DumpError` and leave the chunk (None: none is left)."""
        if mode == MODE_ONE and len(chunk.segments) == 1:
            job, indices = chunk.segments[0]
            if type(job.items) is range and isinstance(indices, range):  # map over a range
                part = job.items[indices.start : indices.stop]
                span = ("r", part.start, part.stop, part.step)
                return link.encode((_CHUNK, chunk.number, chunk.function, mode, span))
        items: list[Any] = []
        for job, indices in chunk.segments:
            if isinstance(indices, range):
                items += job.items[indices.start : indices.stop]
            else:
                items += [job.items[index] for index in indices]
        try:
            run = pack(items) if mode == MODE_ONE else items  # plain ints or floats: packed
            return link.encode((_CHUNK, chunk.number, chunk.function, mode, run))
        except DumpError:
            pass
        kept: list[tuple[Job, Sequence[int]]] = []
        for (job, index), item in zip(chunk.entries(), items, strict=True):
            try:
                dumps(item)
            except DumpError as exc:
                job.settle(index, False, exc)
                job.batch_done()
            else:
                kept.append((job, [index]))
        if not kept:
            return None
        chunk.segments = kept
        chunk.size = len(kept)
        return self._encode(link, chunk, mode)

    def _requeue(self, entries: list[tuple[Job, int]]) -> None:
        """Put items back at the front of the queue, in their order."""
        by_job: dict[Job, list[int]] = {}
        for job, index in entries:
            if job.states[index] == PENDING and not job.cancelled:
                by_job.setdefault(job, []).append(index)
        for job, indices in reversed(list(by_job.items())):
            job.retry.extendleft(reversed(indices))
            self.waiting += len(indices)
            self.queue.appendleft(job)

    # -- answers and ends

    def _on_answer(self, link: Link, message: Any) -> None:
        number, offset, values, failures, elapsed = message
        chunk = link.inflight.get(number)
        if chunk is None:
            return
        values = unpack(values)  # (a ValueError ends the link: not our far side's answer)
        if offset == 0 and len(values) == chunk.size:
            del link.inflight[number]
            if chunk.timer is not None:
                chunk.timer.cancel()
            self.sizer.measured(chunk.function, chunk.size, elapsed)
            for job, _ in chunk.segments:
                job.measured = True
            if not failures:  # the common case: a run of results per segment
                start = 0
                for job, indices in chunk.segments:
                    part = values[start : start + len(indices)]
                    start += len(indices)
                    if isinstance(indices, range):
                        job.settle_range(indices.start, part)
                    else:
                        for index, value in zip(indices, part, strict=True):
                            job.settle(index, True, value)
                    job.batch_done()
                self.dispatch()
                return
        elif offset + len(values) == chunk.size:  # the last of an item-by-item answer
            del link.inflight[number]
        entries = chunk.entries()
        touched: dict[Job, None] = {}
        for position, value in enumerate(values, offset):
            job, index = entries[position]
            touched[job] = None
            failure = failures.get(position - offset) if failures else None
            if failure is None:
                job.settle(index, True, value)
            elif failure[0] == _SKIPPED:
                job.settle(index, False, asyncio.CancelledError())
            else:
                job.settle(index, False, remote_error(failure[1]))
        for job in touched:
            job.batch_done()
        self.dispatch()

    def _timed_out(self, link: Link, chunk: Chunk) -> None:
        for job, index in chunk.entries():
            job.settle(
                index,
                False,
                TimeoutError(
                    f"{job.function.name} did not return within {job.timeout}s "
                    f"on gateway {link.gateway.id!r}"
                ),
            )
            job.batch_done()
        if link.alive and chunk.number in link.inflight:
            link.send(link.encode((_CANCEL, chunk.number, None)))

    def _on_end(self, link: Link, error: BaseException | None) -> None:
        if link in self.links:
            self.links.remove(link)
        chunks, link.inflight = list(link.inflight.values()), {}
        resend: list[tuple[Job, int]] = []
        touched: set[Job] = set()
        for chunk in chunks:
            if chunk.timer is not None:
                chunk.timer.cancel()
            for job, index in chunk.entries():
                if job.states[index] != PENDING or job.cancelled:
                    continue
                tries = job.resent.get(index, 0)
                if tries >= self.retries:
                    job.settle(index, False, self._lost(link, error, job))
                    touched.add(job)
                else:
                    job.resent[index] = tries + 1
                    resend.append((job, index))
        self._requeue(resend)
        for job in touched:
            job.batch_done()
        if not self.links:
            self._fail_waiting(f"no gateway left (the last, {link.gateway.id!r}, ended: {error})")
        self.dispatch()

    def _lost(self, link: Link, error: BaseException | None, job: Job) -> GatewayLost:
        retried = f" (sent {self.retries} more time(s) already)" if self.retries else ""
        return GatewayLost(
            f"gateway {link.gateway.id!r} was lost while it had a task of "
            f"{job.function.name}{retried}: {error}",
            link.gateway.id,
        )

    def _fail_waiting(self, why: str) -> None:
        """Fail every item still queued with :class:`GatewayLost`."""
        while self.queue:
            job = self.queue.popleft()
            dropped = job.drop_waiting()
            self.waiting -= len(dropped)
            for index in dropped:
                job.settle(index, False, GatewayLost(f"{why}: task of {job.function.name} not run"))
            job.batch_done()
