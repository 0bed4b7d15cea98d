"""``asyncgw.sync.Executor``: the pool as a :class:`concurrent.futures.Executor`.

::

    from asyncgw.sync import Executor
    with Executor(4) as executor:                  # 4 local interpreters
        print(list(executor.map(square, range(100))))
    with Executor(gateways=["ssh=a", "ssh=b"]) as executor:
        future = executor.submit(work, 1, key=2)

Made as the rest of the facade is: it owns an async :class:`asyncgw.Pool`
on the facade's loop thread. ``submit`` and ``map`` hand their job to the
loop without waiting (a burst of submits wakes it once); results reach
``concurrent.futures`` futures, or ``map``'s iterator, from the loop.

As in the stdlib's pools, a future turns running when its task is sent
to a gateway; until then ``cancel()`` succeeds and the task never runs.
``map`` reads its iterables at once and its ``timeout`` counts from the
call; the pool's own ``timeout`` limits each task.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import RestartPolicy
from .._errors import TimeoutError
from .._loopthread import call_blocking, loop_thread, run_blocking
from .._loopthread import submit as _to_loop
from ..pool.functions import function_for
from ..pool.jobs import (
    FAILED,
    MODE_KWARGS,
    MODE_ONE,
    MODE_STAR,
    PENDING,
    ConcurrentFutureJob,
    Job,
    ThreadMapJob,
)
from ..pool.pool import Pool
from ..pool.progress import Bar
from .gateway import Gateway
from .group import Group

__all__ = ["Executor"]


def _core(gateways: Any) -> Any:
    """Facade groups and gateways replaced by their core objects."""
    if isinstance(gateways, Group):
        return gateways._group
    if isinstance(gateways, str | int) or not isinstance(gateways, Iterable):
        return gateways
    return [item._gateway if isinstance(item, Gateway) else item for item in gateways]


_live: weakref.WeakSet[Executor] = weakref.WeakSet()
_live_lock = threading.Lock()


async def _close_live() -> None:
    for executor in list(_live):
        await executor._pool.close(cancel=True)


class Executor(concurrent.futures.Executor):
    """A :class:`concurrent.futures.Executor` whose workers are gateways.

    :param max_workers: how many local interpreters (``popen``) to start,
        if ``gateways`` is not given (default: one per CPU).
    :param gateways: specs of the gateways to start (``["ssh=a"] * 4``),
        or a group (:class:`asyncgw.sync.Group` or :class:`asyncgw.Group`)
        or gateways to use as they are.
    :param chunksize: items sent together by ``map`` (default: automatic).
    :param timeout: seconds each task may run (its future then fails with
        :class:`~asyncgw.TimeoutError`).
    :param retries: times a task is sent to another gateway when its
        gateway is lost (at-least-once); 0: it fails with
        :class:`~asyncgw.GatewayLost`.

    The other parameters are :class:`asyncgw.Pool`'s. The gateways start
    here; :meth:`shutdown` (or the end of a ``with`` block) stops them.

    :raises GatewayError: if a gateway could not be started.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        gateways: Any = None,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 1,
        window: int = 2,
        restart: RestartPolicy | int | None = None,
        exit_timeout: float = 1.0,
    ) -> None:
        if gateways is None:
            if max_workers is not None and max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
            gateways = max_workers or os.cpu_count() or 1
        self._lock = threading.Lock()
        self._shutdown = False
        options: dict[str, Any] = {
            "chunksize": chunksize,
            "timeout": timeout,
            "retries": retries,
            "window": window,
            "restart": restart,
            "exit_timeout": exit_timeout,
        }
        workers = _core(gateways)

        async def start() -> Pool:
            return await Pool(workers, **options).start()

        self._pool: Pool = run_blocking(start)
        with _live_lock:
            if _close_live not in loop_thread.shutdown_hooks:
                loop_thread.shutdown_hooks.insert(0, _close_live)
            _live.add(self)

    def __repr__(self) -> str:
        return f"<Executor {self._pool!r}>"

    @property
    def gateway_ids(self) -> list[str]:
        """The ids of the gateways that take work now."""
        return [gateway.id for gateway in self._pool.gateways]

    def _add(self, job: Job) -> None:
        """Hand ``job`` to the loop (the caller holds the lock)."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        scheduler = self._pool._scheduler

        def add() -> None:
            try:
                scheduler.add(job)
            except Exception as exc:  # closed meanwhile: fail, never hang
                for index in range(len(job.items)):
                    job.settle(index, False, exc)
                job.batch_done()

        _to_loop(add)

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args, **kwargs)`` on the first free gateway; its future.

        :raises RuntimeError: after :meth:`shutdown`.
        :raises ValueError, TypeError: for a function that cannot be sent
            (it must be self-contained: see :meth:`asyncgw.Gateway.call`).
        """
        function = function_for(fn)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if kwargs:
            job = ConcurrentFutureJob(function, MODE_KWARGS, (args, kwargs), future)
        else:
            job = ConcurrentFutureJob(function, MODE_STAR, args, future)
        job.timeout = self._pool.timeout
        with self._lock:
            self._add(job)
        return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        progress: bool = False,
    ) -> Iterator[Any]:
        """``fn(*args)`` for ``args`` in ``zip(*iterables)``, run on the
        gateways; an iterator of the results in order. The iterables are
        read now; a failed task raises where its result would be.

        :param timeout: seconds from this call after which the iterator
            raises :class:`~asyncgw.TimeoutError` (also the builtin
            ``TimeoutError``) for a result not there yet.
        :param chunksize: items sent together (default: automatic).
        :param progress: draw a rich progress bar on standard error until
            the iterator ends (rich comes with the ``cli`` extra).
        :raises RuntimeError: after :meth:`shutdown`.
        :raises ImportError: for ``progress`` without rich (nothing is run).
        """
        end = None if timeout is None else time.monotonic() + timeout
        function = function_for(fn)
        if len(iterables) == 1:
            # A range is kept as it is (immutable): its chunks travel as ranges.
            one = iterables[0]
            items, mode = (one if type(one) is range else list(one)), MODE_ONE
        else:
            items, mode = list(zip(*iterables, strict=False)), MODE_STAR
        job = ThreadMapJob(
            function,
            mode,
            items,
            timeout=self._pool.timeout,
            chunksize=chunksize if chunksize is not None else self._pool.chunksize,
        )
        if progress:  # before anything is sent: a missing rich starts no work
            job.bar = Bar(len(items), function.name)
        with self._lock:
            self._add(job)
        return self._results(job, end, timeout)

    def _results(
        self, job: ThreadMapJob, end: float | None, timeout: float | None
    ) -> Iterator[Any]:
        states, values, count = job.states, job.values, len(job.items)
        try:
            index = 0
            while index < count:
                if states[index] == PENDING:
                    with job.cond:
                        while states[index] == PENDING:
                            left = None if end is None else end - time.monotonic()
                            if left is not None and left <= 0:
                                raise TimeoutError(f"map: results not all there within {timeout}s")
                            job.cond.wait(left)
                if states[index] == FAILED:
                    value, values[index] = values[index], None
                    raise value
                # The run of results there from here on, handed over at once
                # (each value was stored before its state: see jobs.Job.settle).
                stop = states.find(PENDING, index)
                failed = states.find(FAILED, index, count if stop < 0 else stop)
                stop = failed if failed >= 0 else count if stop < 0 else stop
                run = values[index:stop]
                values[index:stop] = [None] * (stop - index)  # held by the caller only
                index = stop
                yield from run
        finally:
            if job.unsettled:
                scheduler = self._pool._scheduler
                _to_loop(lambda: scheduler.cancel(job))
            if job.bar is not None:
                job.bar.close()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more work; with ``cancel_futures``, cancel the tasks not sent
        to a gateway yet; with ``wait``, block until the work given is done
        and the gateways are stopped (else they stop once it is done)."""
        with self._lock:
            self._shutdown = True
        scheduler = self._pool._scheduler
        if cancel_futures:  # before returning, as the stdlib's pools
            call_blocking(scheduler.cancel_unsent)
        if wait:
            run_blocking(self._pool.close)
        else:
            pool = self._pool

            def close() -> None:
                import asyncio

                task = asyncio.ensure_future(pool.close())
                _closing.add(task)
                task.add_done_callback(_closing.discard)

            _to_loop(close)


_closing: set[Any] = set()  # tasks of shutdown(wait=False), held until done
