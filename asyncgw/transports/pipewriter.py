"""Writing a worker's input pipe without copying what it does not take.

asyncio's pipe transports copy whatever a write leaves over into a
bytearray of their own (``buffer += data``): for a 1 MiB frame into a full
pipe, a fresh megabyte allocated, page-faulted and copied, beside the copy
the kernel makes anyway. :class:`PipeWriter` keeps the caller's own bytes
objects instead (they are immutable: holding them is as good as a copy)
and hands them to ``writev`` as the pipe drains. It writes the
pipe of the asyncio transport it stands in front of (which is given
nothing to write meanwhile, and still owns the descriptor): it is closed
(:meth:`close`) before the transport closes the pipe. When asyncio closes
it on its own (the worker closed its end), the writer, waiting for room,
is woken in the same loop pass, before the descriptor is closed, and
stops on the broken pipe; a transport that is closing is given nothing.

Invariant for writers on other threads (the router's direct writes):
:attr:`size` is zero only once every byte handed to :meth:`write` is in the
pipe, so a frame written straight to the pipe when it reads zero (under the
router's write lock) comes after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import Callable

__all__ = ["PipeWriter"]

#: Bytes kept beyond which the writer asks the sender to pause, and below
#: which it lets it go on (asyncio's defaults for pipes).
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024
#: Buffers given to one writev at most (the usual IOV_MAX is 1024).
WRITEV_MAX = 64


class PipeWriter:
    """Writes to the non-blocking pipe ``fd`` on the running loop; calls
    ``pause()`` when more than :data:`HIGH_WATER` bytes wait, ``resume()``
    once at most :data:`LOW_WATER` do. A write error drops what waits and
    every later write (the end is told by the worker's output ending)."""

    def __init__(self, fd: int, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self._fd = fd
        self._pause = pause
        self._resume = resume
        self._loop = asyncio.get_running_loop()
        self._pending: deque[bytes | memoryview] = deque()
        #: Bytes handed to :meth:`write`, not yet in the pipe.
        self.size = 0
        self._paused = False
        self._closed = False
        self._ending = False  # when_drained was called, or close: no more writes
        self._drained: Callable[[], None] | None = None

    def write(self, data: bytes) -> None:
        """Write ``data`` now as far as the pipe takes it; keep the rest."""
        if self._ending or not data:
            return
        if type(data) is not bytes:
            data = bytes(data)  # a buffer the caller may change: copied once
        if not self._pending:
            try:
                written = os.write(self._fd, data)
            except (BlockingIOError, InterruptedError):
                written = 0
            except OSError:
                self._fail()
                return
            if written == len(data):
                return
            self._loop.add_writer(self._fd, self._ready)
            self._pending.append(memoryview(data)[written:] if written else data)
            self.size += len(data) - written
        else:
            self._pending.append(data)
            self.size += len(data)
        if not self._paused and self.size > HIGH_WATER:
            self._paused = True
            self._pause()

    def _ready(self) -> None:
        pending = self._pending
        if not pending:
            return
        try:
            written = os.writev(self._fd, list(pending)[:WRITEV_MAX])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._fail()
            return
        left = written
        while left:
            head = pending[0]
            if left >= len(head):
                left -= len(head)
                pending.popleft()
            else:
                pending[0] = memoryview(head)[left:]
                left = 0
        self.size -= written  # after the pipe has them: see the module's invariant
        if not pending:
            self._loop.remove_writer(self._fd)
            drained, self._drained = self._drained, None
            if drained is not None:
                drained()
        if self._paused and self.size <= LOW_WATER:
            self._paused = False
            self._resume()

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once everything written is in the pipe (now, if
        it is); later writes are dropped (for closing the pipe)."""
        self._ending = True
        if self._pending and not self._closed:
            self._drained = callback
        else:
            callback()

    def _fail(self) -> None:
        drained = self._drained
        self.close()
        if self._paused:
            self._paused = False
            self._resume()  # nobody may wait for room that never comes
        if drained is not None:
            drained()

    def close(self) -> None:
        """Stop writing, drop what waits (before the pipe is closed)."""
        if self._closed:
            return
        self._closed = self._ending = True
        if self._pending:
            self._pending.clear()
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.remove_writer(self._fd)
        self.size = 0
        self._drained = None
