"""Jobs: one ``submit`` or one ``map`` call, and where its results go.

A job holds its items (argument values, as the far side takes them), which
of them wait to be sent (those from ``next`` on, and ``retry``: items of a
lost gateway, sent again first) and one slot per item for its outcome.
The scheduler (:mod:`asyncgw.pool.scheduler`) takes runs of indices into
chunks (:meth:`Job.take`: a ``range`` for items sent the first time, so a
chunk of a map costs no work per item here) and reports outcomes with
:meth:`Job.settle`, or :meth:`Job.settle_range` for a run that succeeded;
the job hands it on: to an asyncio future, a ``concurrent.futures``
future, or an ordered buffer that ``map`` and ``imap`` read.

Invariants: an item is settled at most once (a late duplicate, after a
resubmission or a timeout, is dropped); every method is called on the
pool's event loop, except the readers of :class:`ThreadMapJob`, which
take its lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .functions import Function
    from .progress import Bar

__all__ = ["AsyncFutureJob", "ConcurrentFutureJob", "Job", "MapJob", "ThreadMapJob"]

#: How the far side calls the function on an item: ``fn(item)``,
#: ``fn(*item)``, ``fn(*item[0], **item[1])``.
MODE_ONE, MODE_STAR, MODE_KWARGS = 0, 1, 2

PENDING, DONE, FAILED = 0, 1, 2


class Job:
    """Items of one call, all run by the same function in the same way.

    :param function: the function, as registered with the pool.
    :param mode: one of :data:`MODE_ONE`, :data:`MODE_STAR`, :data:`MODE_KWARGS`.
    :param items: the argument values, one per task (a list, or a
        ``range``: ``map`` over a range keeps it, and its chunks travel as
        ranges).
    :param timeout: seconds each task may run (None: no limit).
    :param chunksize: items per chunk (None: the pool sizes chunks).
    """

    def __init__(
        self,
        function: Function,
        mode: int,
        items: Sequence[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
    ) -> None:
        self.function = function
        self.mode = mode
        self.items = items
        self.timeout = timeout
        self.chunksize = chunksize
        self.next = 0  # items from here on were never sent
        self.retry: deque[int] = deque()  # items to send again, first
        self.states = bytearray(len(items))
        self.unsettled = len(items)
        self.cancelled = False
        #: index -> times it was sent again after its gateway was lost
        self.resent: dict[int, int] = {}
        #: Whether a chunk of its items has come back (chunk sizes then
        #: rely on what they cost: see :mod:`.chunking`).
        self.measured = False
        #: Called once when every item is settled (the pool forgets the job).
        self.on_finished: Callable[[Job], None] | None = None
        #: ``progress=True``: told how many items are settled, per chunk.
        self.bar: Bar | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.function.name} {len(self.items)} items>"

    #: Whether :meth:`start` must be asked for each item (futures).
    checks_start = False

    def waiting(self) -> int:
        """How many items wait to be sent."""
        return len(self.retry) + len(self.items) - self.next

    def take(self, count: int) -> Sequence[int]:
        """Up to ``count`` waiting items' indices, to send (at least one
        if any waits)."""
        if self.retry:
            count = min(count, len(self.retry))
            return [self.retry.popleft() for _ in range(count)]
        taken = range(self.next, min(self.next + count, len(self.items)))
        self.next = taken.stop
        return taken

    def drop_waiting(self) -> list[int]:
        """Every waiting item's index; none waits any more."""
        dropped = [*self.retry, *range(self.next, len(self.items))]
        self.retry.clear()
        self.next = len(self.items)
        return dropped

    def start(self, index: int) -> bool:
        """The item is about to be sent; False if it must not run
        (cancelled), in which case it has been settled as such."""
        return not self.cancelled

    def settle(self, index: int, ok: bool, value: Any) -> None:
        """Record item ``index``'s result (``ok``) or exception."""
        if self.states[index] != PENDING:
            return
        self.deliver(index, ok, value)
        # After the value: a reader in another thread looks at the state first.
        self.states[index] = DONE if ok else FAILED
        self.unsettled -= 1
        if self.unsettled == 0:
            self.finish()

    def settle_range(self, start: int, values: list[Any]) -> None:
        """Record the results of items ``start``, ``start + 1``, ...: one
        step for the run where none of them is settled yet."""
        stop = start + len(values)
        if self.states.count(PENDING, start, stop) != len(values):
            for index, value in enumerate(values, start):
                self.settle(index, True, value)
            return
        self.deliver_range(start, values)
        self.states[start:stop] = b"\x01" * len(values)  # DONE, after the values
        self.unsettled -= len(values)
        if self.unsettled == 0:
            self.finish()

    def deliver(self, index: int, ok: bool, value: Any) -> None:
        """Hand one outcome on (subclasses)."""

    def deliver_range(self, start: int, values: list[Any]) -> None:
        """Hand on the results of a run of items."""
        for index, value in enumerate(values, start):
            self.deliver(index, True, value)

    def batch_done(self) -> None:
        """Outcomes of a chunk were delivered: wake readers once per chunk."""

    def finish(self) -> None:
        if self.on_finished is not None:
            self.on_finished(self)

    def cancel_all(self) -> None:
        """Settle every item not settled yet as cancelled."""
        self.cancelled = True
        error = asyncio.CancelledError()
        for index in range(len(self.items)):
            if self.states[index] == PENDING:
                self.settle(index, False, error)
        self.batch_done()


class AsyncFutureJob(Job):
    """One ``Pool.submit``: its result goes to an asyncio future."""

    def __init__(self, function: Function, mode: int, item: Any, **options: Any) -> None:
        super().__init__(function, mode, [item], **options)
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    checks_start = True

    def start(self, index: int) -> bool:
        if self.future.done():  # cancelled by its awaiter before it went
            self.cancelled = True
            self.settle(index, False, asyncio.CancelledError())
            return False
        return True

    def deliver(self, index: int, ok: bool, value: Any) -> None:
        if self.future.done():
            return
        if ok:
            self.future.set_result(value)
        elif isinstance(value, asyncio.CancelledError):
            self.future.cancel()
        else:
            self.future.set_exception(value)


class ConcurrentFutureJob(Job):
    """One ``Executor.submit``: its result goes to a ``concurrent.futures``
    future, which turns running when the item is sent (so that ``cancel``
    succeeds exactly for work that was not sent, as in the stdlib's pools)."""

    def __init__(
        self, function: Function, mode: int, item: Any, future: concurrent.futures.Future[Any]
    ) -> None:
        super().__init__(function, mode, [item])
        self.future = future
        self._running = False

    checks_start = True

    def start(self, index: int) -> bool:
        if self._running:  # sent again after its gateway was lost
            return True
        if self.cancelled or not self.future.set_running_or_notify_cancel():
            self.cancelled = True
            self.settle(index, False, None)
            return False
        self._running = True
        return True

    def deliver(self, index: int, ok: bool, value: Any) -> None:
        future = self.future
        if future.done():
            return
        if ok:
            future.set_result(value)
        elif isinstance(value, asyncio.CancelledError) or value is None:
            if not future.cancel():  # running already: it cannot be cancelled
                future.set_exception(concurrent.futures.CancelledError())
        else:
            future.set_exception(value)


class MapJob(Job):
    """One async ``map``/``imap``: outcomes in a list, readers woken by an
    event; with ``unordered``, the indices in the order they settled too
    (for ``imap_unordered``: a tenth of what a trivial task costs here,
    not spent for the others)."""

    def __init__(self, *args: Any, unordered: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.values: list[Any] = [None] * len(self.items)
        self.unordered = unordered
        self.completed: deque[int] = deque()  # settled indices, in settling order
        self.progress = asyncio.Event()

    def deliver(self, index: int, ok: bool, value: Any) -> None:
        self.values[index] = value
        if self.unordered:
            self.completed.append(index)

    def deliver_range(self, start: int, values: list[Any]) -> None:
        self.values[start : start + len(values)] = values
        if self.unordered:
            self.completed.extend(range(start, start + len(values)))

    def batch_done(self) -> None:
        self.progress.set()
        if self.bar is not None:
            self.bar.advance(len(self.items) - self.unsettled)

    def finish(self) -> None:
        self.progress.set()
        super().finish()


class ThreadMapJob(Job):
    """One ``Executor.map``: outcomes in a list, read by another thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.values: list[Any] = [None] * len(self.items)
        self.cond = threading.Condition(threading.Lock())

    def deliver(self, index: int, ok: bool, value: Any) -> None:
        self.values[index] = value

    def deliver_range(self, start: int, values: list[Any]) -> None:
        self.values[start : start + len(values)] = values

    def batch_done(self) -> None:
        with self.cond:
            self.cond.notify_all()
        if self.bar is not None:
            self.bar.advance(len(self.items) - self.unsettled)

    def finish(self) -> None:
        self.batch_done()
        super().finish()
