"""The blocking facade's event-loop thread: one per process, started lazily.

It runs an anyio :class:`~anyio.from_thread.BlockingPortal` on asyncio (on
uvloop when installed: this loop is ours, unlike the async API's). The
thread is a daemon so that it never holds up interpreter exit; an
``atexit`` hook first terminates every group the facade made, then stops
the loop — creating no thread on the way, which Python 3.12+ refuses
during shutdown.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal

__all__ = ["LoopThread", "call_blocking", "loop_thread", "run_blocking", "submit"]

T = TypeVar("T")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoopThread:
    """Owns the facade's loop thread and its portal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Called on the loop, in order, before it stops at exit.
        self.shutdown_hooks: list[Callable[[], Awaitable[None]]] = []

    @property
    def portal(self) -> BlockingPortal:
        portal = self._portal
        if portal is None:
            with self._lock:
                if self._portal is None:
                    self._start()
                portal = self._portal
        assert portal is not None
        return portal

    def _start(self) -> None:
        started = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            async with BlockingPortal() as portal:
                self._portal = portal
                self.loop = asyncio.get_running_loop()
                started.set()
                await portal.sleep_until_stopped()

        def run() -> None:
            loop = _new_loop()
            try:
                loop.run_until_complete(serve())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                started.set()
            finally:
                loop.close()

        thread = threading.Thread(target=run, name="asyncgw-loop", daemon=True)
        thread.start()
        started.wait()
        if failure:
            raise RuntimeError("the asyncgw event-loop thread failed to start") from failure[0]
        self._thread = thread
        atexit.register(self.stop)

    def call_sync(self, function: Callable[..., T], *args: Any) -> T:
        """Run plain ``function(*args)`` on the loop thread; block for it."""
        return self.portal.call(function, *args)

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def stop(self) -> None:
        """Run the shutdown hooks, stop the loop and join its thread."""
        portal, thread = self._portal, self._thread
        if portal is None or thread is None or not thread.is_alive():
            return
        for hook in list(self.shutdown_hooks):
            with contextlib.suppress(Exception):  # the others must still run
                portal.call(hook)
        with contextlib.suppress(RuntimeError):  # already stopping
            portal.call(portal.stop)
        thread.join(timeout=10)
        self._portal = None
        self._thread = None


#: The process's one facade loop thread.
loop_thread = LoopThread()


class _Submitter:
    """Hands work to the loop thread, waking it once per burst: a ``send``
    followed by a ``receive`` costs one wake-up of the loop, not two."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque[Callable[[], None]] = deque()

    def submit(self, work: Callable[[], None]) -> None:
        with self._lock:
            self._pending.append(work)
            wake = len(self._pending) == 1
        if wake:
            loop = loop_thread.loop
            assert loop is not None
            loop.call_soon_threadsafe(self._run)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                work = self._pending.popleft()
            work()


_submitter = _Submitter()

#: Hand a plain callable to the loop thread (batched with others queued).
submit = _submitter.submit


def run_blocking(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Await ``function(*args, **kwargs)`` on the loop thread, blocking.

    If the wait is interrupted (KeyboardInterrupt), the coroutine is
    cancelled, so that e.g. an interrupted ``receive`` consumes nothing.
    """
    loop_thread.portal  # noqa: B018 - starts the loop thread on first use
    if loop_thread.in_loop_thread():
        raise RuntimeError("asyncgw.sync cannot block the loop thread (called from a callback?)")
    result: concurrent.futures.Future[Any] = concurrent.futures.Future()
    tasks: list[asyncio.Task[Any]] = []

    def start() -> None:
        if result.set_running_or_notify_cancel():
            task = asyncio.ensure_future(function(*args, **kwargs))
            task.add_done_callback(functools.partial(_settle, result))
            tasks.append(task)

    submit(start)
    try:
        return result.result()
    except BaseException:
        if not result.cancel():  # running: cancel the task itself
            loop = loop_thread.loop
            assert loop is not None
            loop.call_soon_threadsafe(lambda: tasks and tasks[0].cancel())
        raise


def _settle(result: concurrent.futures.Future[Any], task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        result.cancel()
    elif (error := task.exception()) is not None:
        result.set_exception(error)
    else:
        result.set_result(task.result())


def call_blocking(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call plain ``function`` on the loop thread (it touches loop state)."""
    return loop_thread.call_sync(functools.partial(function, *args, **kwargs))
