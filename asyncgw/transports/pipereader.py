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
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import threading
from collections.abc import Callable

__all__ = ["READ_SIZE", "PipeReader", "read_buffer"]

#: Bytes read at once at most (the buffer's size).
READ_SIZE = 256 * 1024

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
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._ready)

    def fileno(self) -> int | None:
        return self._fd

    def _ready(self) -> None:
        if self._fd is None:
            return
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
        if fd is not None:
            with contextlib.suppress(ValueError, RuntimeError):  # the loop is closed
                self._loop.remove_reader(fd)
            os.close(fd)
