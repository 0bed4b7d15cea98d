"""``Pool``: a parallel map over any gateways, awaited.

::

    async with asyncgw.Pool(["popen"] * 4) as pool:
        squares = await pool.map(square, range(1000))
        async for result in pool.imap_unordered(slow, items):
            ...
        result = await pool.submit(work, 1, key=2)

A pool runs self-contained functions (shipped as source, once per
gateway) on the gateways of a group: popen, ssh, socket, via, cmd, or a
mix. Each gateway runs one task at a time; start as many gateways on a
host as it has cores to use. The scheduling and the failures are
described in :mod:`asyncgw.pool.scheduler`.

A pool made from specs (or a number) owns its group: it starts the
gateways on entry and terminates them on exit. A pool given a
:class:`~asyncgw.Group` or gateways uses them and leaves them running.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from .._gateway import Gateway
from .._group import Group
from .._spec import XSpec
from ..objects.supervision import Death, RestartPolicy
from .functions import function_for
from .jobs import FAILED, MODE_KWARGS, MODE_ONE, MODE_STAR, PENDING, AsyncFutureJob, Job, MapJob
from .progress import Bar
from .scheduler import Scheduler

__all__ = ["Pool", "Workers"]

#: What a pool runs on: a number of local interpreters (popen), specs, a
#: group, or gateways.
Workers = int | str | XSpec | Group | Iterable[str | XSpec] | Iterable[Gateway]


class Pool:
    """A parallel map over gateways (see the module docstring).

    :param workers: how many local interpreters (``popen``) to start, the
        specs of the gateways to start, or a :class:`~asyncgw.Group` or
        gateways to use as they are. Default: one ``popen`` per CPU.
    :param chunksize: items sent together (default: sized automatically
        from what the function's tasks cost remotely).
    :param window: chunks out per gateway at most (one running, the next
        ones queued there).
    :param retries: times a task is sent to another gateway after its
        gateway was lost (0: it fails with :class:`GatewayLost` at once).
        A task may so run more than once: at-least-once.
    :param timeout: seconds each task may run (None: no limit), unless a
        call says otherwise.
    :param restart: for a pool that starts its gateways: restart those
        that die (see :class:`~asyncgw.RestartPolicy`); restarted gateways
        rejoin the pool.
    :param exit_timeout: seconds the gateways of a pool that started them
        have to exit at close before they are killed.
    """

    def __init__(
        self,
        workers: Workers | None = None,
        *,
        chunksize: int | None = None,
        window: int = 2,
        retries: int = 1,
        timeout: float | None = None,
        restart: RestartPolicy | int | None = None,
        exit_timeout: float = 1.0,
    ) -> None:
        if chunksize is not None and chunksize < 1:
            raise ValueError("chunksize must be at least 1")
        self.chunksize = chunksize
        self.timeout = timeout
        self._scheduler = Scheduler(window=window, retries=retries)
        self._exit_timeout = exit_timeout
        self._group: Group | None = None
        self._gateways: list[Gateway] = []
        self._specs: list[str | XSpec] = []
        self._owned = False
        self._restart = restart
        self._state = "new"
        self._closed = asyncio.Event()
        if workers is None:
            import os

            workers = os.cpu_count() or 1
        if isinstance(workers, int):
            if workers < 1:
                raise ValueError("a pool needs at least one worker")
            self._specs = ["popen"] * workers
        elif isinstance(workers, str | XSpec):
            self._specs = [workers]
        elif isinstance(workers, Group):
            self._group = workers
        else:
            listed = list(workers)
            if listed and all(isinstance(item, Gateway) for item in listed):
                self._gateways = listed
            elif all(isinstance(item, str | XSpec) for item in listed):
                self._specs = listed
            else:
                raise TypeError("a pool runs on specs, a Group or Gateways, not a mix of them")

    def __repr__(self) -> str:
        ids = [link.gateway.id for link in self._scheduler.links]
        return f"<Pool {self._state} {ids!r}>"

    @property
    def gateways(self) -> list[Gateway]:
        """The gateways the pool sends work to now."""
        return [link.gateway for link in self._scheduler.links]

    # -- lifetime

    async def start(self) -> Pool:
        """Start the gateways (if the pool owns them) and the task loop on
        each. Cancelling stops and kills what was started.

        :raises GatewayError: if a gateway could not be started.
        """
        if self._state != "new":
            raise RuntimeError(f"the pool is {self._state}")
        self._state = "starting"
        try:
            if self._specs:
                self._owned = True
                self._group = Group(exit_timeout=self._exit_timeout, restart=self._restart)
                await self._group.makegateways(self._specs)
            gateways = list(self._group) if self._group is not None else self._gateways
            if not gateways:
                raise ValueError("a pool needs at least one gateway")
            for gateway in gateways:
                self._scheduler.add_gateway(gateway)
            if self._group is not None:
                self._group.on_restart(self._restarted)
        except BaseException:
            self._state = "closed"
            try:
                await asyncio.shield(self._stop())
            finally:
                self._closed.set()
            raise
        self._state = "running"
        return self

    def _restarted(self, gateway: Gateway, death: Death) -> None:
        if self._state in ("running", "starting") and not self._scheduler.closing:
            self._scheduler.add_gateway(gateway)

    async def close(self, *, cancel: bool = False) -> None:
        """Let the work given finish (``cancel``: cancel it all; tasks
        running remotely are told, and abandoned), end the task loops, and
        terminate the gateways if the pool started them. Idempotent. Cancelling the wait cancels the
        work left and still stops the gateways."""
        scheduler = self._scheduler
        if cancel:  # also when a close is under way: it then ends sooner
            for job in list(scheduler.active):
                scheduler.cancel(job)
        if self._state in ("closed", "closing"):
            await self._closed.wait()
            return
        self._state = "closing"
        scheduler.closing = True
        try:
            await scheduler.idle.wait()
        except BaseException:
            for job in list(scheduler.active):
                scheduler.cancel(job)
            raise
        finally:
            self._state = "closed"
            try:
                await asyncio.shield(self._stop())
            finally:
                self._closed.set()

    async def _stop(self) -> None:
        await self._scheduler.close_links()
        if self._owned and self._group is not None:
            await self._group.terminate(self._exit_timeout)

    async def __aenter__(self) -> Pool:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        await self.close(cancel=exc_type is not None)

    # -- work

    def _check_running(self) -> None:
        if self._state != "running":
            raise RuntimeError(f"the pool is {self._state}: use 'async with Pool(...)'")

    def _options(self, timeout: float | None, chunksize: int | None) -> dict[str, Any]:
        return {
            "timeout": self.timeout if timeout is None else timeout,
            "chunksize": self.chunksize if chunksize is None else chunksize,
        }

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """Run ``fn(*args, **kwargs)`` on the first free gateway. Returns
        a future at once; ``await`` it for the result. Cancelling the
        future before the task started means it never runs remotely.

        :raises ValueError, TypeError: at once, for a function that cannot
            be sent (see :func:`asyncgw.Gateway.call`).
        :raises RemoteError: (from the future) if the function raised.
        :raises GatewayLost: (from the future) if its gateways were lost.
        :raises TimeoutError: (from the future) if it ran out of the
            pool's ``timeout``.
        """
        self._check_running()
        function = function_for(fn)
        if kwargs:
            job = AsyncFutureJob(function, MODE_KWARGS, (args, kwargs), **self._options(None, None))
        else:
            job = AsyncFutureJob(function, MODE_STAR, args, **self._options(None, None))
        scheduler = self._scheduler

        def on_done(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                scheduler.cancel(job)

        job.future.add_done_callback(on_done)
        scheduler.add(job)
        return job.future

    def _map_job(
        self,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        star: bool,
        timeout: float | None,
        chunksize: int | None,
        progress: bool = False,
        unordered: bool = False,
    ) -> MapJob:
        self._check_running()
        function = function_for(fn)
        items: Sequence[Any]
        if star:
            (iterable,) = iterables
            items, mode = [tuple(args) for args in iterable], MODE_STAR
        elif len(iterables) == 1:
            # A range is kept as it is (immutable): its chunks travel as ranges.
            one = iterables[0]
            items, mode = (one if type(one) is range else list(one)), MODE_ONE
        else:
            items, mode = list(zip(*iterables, strict=False)), MODE_STAR
        job = MapJob(
            function, mode, items, unordered=unordered, **self._options(timeout, chunksize)
        )
        if progress:  # before anything is sent: a missing rich starts no work
            job.bar = Bar(len(items), function.name)
        self._scheduler.add(job)
        return job

    async def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        timeout: float | None = None,
        return_exceptions: bool = False,
        progress: bool = False,
    ) -> list[Any]:
        """``[fn(*args) for args in zip(*iterables)]``, run on the gateways,
        in order. The iterables are read at once.

        Cancelling cancels the tasks not started.

        :param timeout: seconds each task may run.
        :param return_exceptions: put each failed task's exception in its
            place instead of raising the first (in order).
        :param progress: draw a rich progress bar on standard error (rich
            comes with the ``cli`` extra; without it: ImportError, nothing run).
        :raises RemoteError: if a task raised (the first to fail; the tasks
            not started then are cancelled).
        :raises GatewayLost: if a task's gateways were lost.
        :raises TimeoutError: if a task ran out of ``timeout``.
        """
        job = self._map_job(fn, iterables, False, timeout, chunksize, progress)
        return await self._gather(job, return_exceptions)

    async def starmap(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        timeout: float | None = None,
        return_exceptions: bool = False,
        progress: bool = False,
    ) -> list[Any]:
        """``[fn(*args) for args in iterable]``, as :meth:`map`."""
        job = self._map_job(fn, (iterable,), True, timeout, chunksize, progress)
        return await self._gather(job, return_exceptions)

    async def _gather(self, job: MapJob, return_exceptions: bool) -> list[Any]:
        try:
            while job.unsettled:
                if not return_exceptions and FAILED in job.states:
                    break
                job.progress.clear()
                await job.progress.wait()
        finally:
            if job.unsettled:
                self._scheduler.cancel(job)
            if job.bar is not None:
                job.bar.close()
        if not return_exceptions and FAILED in job.states:
            failures = [job.values[i] for i, state in enumerate(job.states) if state == FAILED]
            # The first task's own error, not the cancellations it caused.
            failures.sort(key=lambda error: isinstance(error, asyncio.CancelledError))
            if failures:
                raise failures[0]
        return job.values

    def imap(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Any]:
        """The results of :meth:`map` as they come, in order: an async
        iterator. A failed task raises where its result would be. Closing
        the iterator early cancels the tasks not started."""
        return self._ordered(self._map_job(fn, iterables, False, timeout, chunksize))

    def imap_unordered(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Any]:
        """The results of :meth:`map` in the order they finish."""
        return self._unordered(
            self._map_job(fn, iterables, False, timeout, chunksize, unordered=True)
        )

    async def _ordered(self, job: MapJob) -> AsyncIterator[Any]:
        try:
            for index in range(len(job.items)):
                while job.states[index] == PENDING:
                    job.progress.clear()
                    await job.progress.wait()
                value, job.values[index] = job.values[index], None
                if job.states[index] == FAILED:
                    raise value
                yield value
        finally:
            self._cancel_rest(job)

    async def _unordered(self, job: MapJob) -> AsyncIterator[Any]:
        try:
            for _ in range(len(job.items)):
                while not job.completed:
                    job.progress.clear()
                    await job.progress.wait()
                index = job.completed.popleft()
                value, job.values[index] = job.values[index], None
                if job.states[index] == FAILED:
                    raise value
                yield value
        finally:
            self._cancel_rest(job)

    def _cancel_rest(self, job: Job) -> None:
        if job.unsettled:
            self._scheduler.cancel(job)
