"""Reading a worker's output pipe into one buffer reused for every read.

asyncio's pipe transports read with ``os.read(fd, 256 KiB)``: a fresh
256 KiB buffer per read, which the allocator maps and unmaps (mmap, mremap,
munmap) every time — 15 µs a read here, a fifth of a small round trip.
Smaller fresh buffers come from the heap instead, which then grows and
trims (page faults) as often. :class:`PipeReader` reads with ``readv`` into
one buffer and hands the sink a view of what was read, valid during the
call (the router's decoder copies out what it keeps). Reads happen on the
event loop's thread one at a time, so all readers of a thread share one
buffer (:func:`read_buffer`): a buffer per gateway would cost 256 KiB each.

A sink that reads large payloads straight into buffers of its own gives
``buffers`` and ``filled`` (the router's ``read_buffers``/``read_filled``):
each read then fills the buffers ``buffers(spare)`` returns, and
``filled(size, spare)`` is told how much arrived instead of ``received``.

Reading is a duty one thread holds at a time (:attr:`PipeReader.duty`): the
loop's reader, or a thread of the blocking facade that waits for a value
and reads the pipe itself meanwhile (:meth:`PipeReader.read_in_thread`),
saving the hand-off from the loop's thread to its own. While a thread
reads, the loop's reader is *parked* (removed from the selector, so the
loop is not woken by what that thread reads); a tick on the loop takes the
duty back once no thread has read for :data:`TICK` seconds (or at once,
from a thread whose long wait ended: it most likely goes away now).
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import select
import threading
from collections.abc import Callable

__all__ = ["READ_SIZE", "PipeReader", "read_buffer"]

#: Bytes read at once at most (the buffer's size).
READ_SIZE = 256 * 1024
#: While parked, the loop looks this often whether a thread still reads...
TICK = 0.002
#: ... and less often, down to this, while one thread waits on and on.
TICK_MAX = 0.25
#: A reading thread polls at most this long at once, so that a reader
#: closed meanwhile is noticed.
POLL_SLICE = 0.25

_local = threading.local()


def read_buffer() -> memoryview:
    """The calling thread's read buffer, shared by its readers: what is read
    into it must be used up before the next read (before returning)."""
    buffer: memoryview | None = getattr(_local, "buffer", None)
    if buffer is None:
        # Anonymous memory: a page is resident once a read reaches it.
        buffer = _local.buffer = memoryview(mmap.mmap(-1, READ_SIZE))
    return buffer


class PipeReader:
    """Reads ``fd`` (which it owns, and closes) on the running loop: each
    read is ``received(view)`` (or, given ``buffers``, a read into
    ``buffers(spare)`` then ``filled(size, spare)``); the end is
    ``ended(None)``, or ``ended(error)`` if reading failed."""

    def __init__(
        self,
        fd: int,
        received: Callable[[memoryview], None],
        ended: Callable[[Exception | None], None],
        buffers: Callable[[memoryview], list[memoryview]] | None = None,
        filled: Callable[[int, memoryview], None] | None = None,
    ) -> None:
        self._fd: int | None = fd
        self._received = received
        self._ended = ended
        self._buffers = buffers if filled is not None else None
        self._filled = filled
        self._loop = asyncio.get_running_loop()
        #: Held by whoever reads: the loop in its callback, or a thread.
        self.duty = threading.Lock()
        self._parked = False  # the loop's reader is off the selector
        self._loop_reads = False  # the loop holds the duty, in _ready
        self._park_asked = False
        self._thread_read = False  # a thread read something since the last tick
        self._tick_every = TICK
        self._waited = False  # a thread's poll ran out (a long wait)
        self._wake_loop = False  # a long wait ended: unpark at once
        #: A thread read the end of the pipe (or failed): the loop reports it,
        #: and no thread reads again.
        self.at_end = False
        self._tick_handle: asyncio.TimerHandle | None = None
        # close() while a thread reads leaves the descriptor to that thread
        # (it may be polling it): _closing_fd, under _close_lock.
        self._close_lock = threading.Lock()
        self._closing_fd = -1
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._ready)

    def fileno(self) -> int | None:
        return self._fd

    def _ready(self) -> None:
        if self._fd is None:
            return
        if not self.duty.acquire(blocking=False):
            self._park()  # a thread reads: let it, and sleep meanwhile
            return
        self._loop_reads = True
        try:
            self._read()
        finally:
            self._loop_reads = False
            self.duty.release()

    def _read(self) -> None:
        assert self._fd is not None
        buffer = read_buffer()
        buffers = self._buffers
        try:
            size = os.readv(self._fd, [buffer] if buffers is None else buffers(buffer))
        except (BlockingIOError, InterruptedError):
            return  # nothing read: buffers() may be asked again
        except OSError as exc:
            self._end(exc)
            return
        if not size:
            self._end(None)
        elif buffers is not None and self._filled is not None:
            self._filled(size, buffer)
        else:
            self._received(buffer[:size])

    def _end(self, error: Exception | None) -> None:
        self.close()
        self._ended(error)

    def close(self) -> None:
        """Stop reading and close the pipe (idempotent; no ``ended``)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if not self._parked:
            with contextlib.suppress(ValueError, RuntimeError):  # the loop is closed
                self._loop.remove_reader(fd)
        self._parked = True
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        with self._close_lock:
            if self._loop_reads:
                pass  # from the loop's own read (its end, say): no thread polls it
            elif self.duty.acquire(blocking=False):
                self.duty.release()
            else:  # a thread polls it: that thread closes it as it lets go
                self._closing_fd = fd
                return
        os.close(fd)

    # -- a thread reads (on the loop's behalf, holding the duty)

    def read_in_thread(self, timeout: float | None, buffers: list[memoryview]) -> int | None:
        """From a thread holding :attr:`duty`: wait up to ``timeout``
        seconds (at most :data:`POLL_SLICE`) for the pipe, then read into
        ``buffers``. The size read; 0 at the end of the pipe, or if it
        failed or was closed (the loop reads it again and reports it);
        None if nothing came."""
        fd = self._fd
        if fd is None:
            self.at_end = True
            return 0
        if not self._parked and not self._park_asked:
            self._park_asked = True
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(self._park)
        wait = POLL_SLICE if timeout is None else min(max(timeout, 0.0), POLL_SLICE)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(wait * 1000):
            self._waited = True
            return None
        try:
            size = os.readv(fd, buffers)
        except (BlockingIOError, InterruptedError):
            return None  # the loop read it first
        except OSError:
            size = 0
        if not size:
            self.at_end = True
        self._thread_read = True
        if self._waited:  # the thread most likely goes away now: the loop reads
            self._waited = False
            self._wake_loop = True
        return size

    def let_go(self, ended: bool = False) -> None:
        """Release :attr:`duty`, from the thread holding it. ``ended``: it
        read the end of the pipe (or failed): the loop reads again now, to
        report it."""
        with self._close_lock:
            self.duty.release()
            fd, self._closing_fd = self._closing_fd, -1
        if fd >= 0:
            os.close(fd)  # close() came while this thread read
        elif ended or self._wake_loop:
            self._wake_loop = False
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._unpark)

    def _park(self) -> None:
        self._park_asked = False
        if self._parked or self._fd is None:
            return
        self._parked = True
        self._loop.remove_reader(self._fd)
        self._thread_read = False
        self._tick_every = TICK
        self._tick_handle = self._loop.call_later(TICK, self._tick)

    def _tick(self) -> None:
        if self._thread_read:  # reading, between values
            self._thread_read = False
            self._tick_every = TICK
        elif self.duty.locked():  # one long wait: the thread ends it itself
            self._tick_every = min(2 * self._tick_every, TICK_MAX)
        else:  # gone
            self._unpark()
            return
        self._tick_handle = self._loop.call_later(self._tick_every, self._tick)

    def _unpark(self) -> None:
        if self._parked and self._fd is not None:
            if self._tick_handle is not None:
                self._tick_handle.cancel()
                self._tick_handle = None
            self._parked = False
            self._loop.add_reader(self._fd, self._ready)
