"""The remote ends of channels, as remote code sees them (execnet's API).

:class:`Channel` serves sync remote code (blocking ``send``/``receive``,
iteration, callbacks, ``makefile``); :class:`AsyncChannel` wraps one for
async remote code. Values are decoded on arrival, in frame order; a
channel that remote code drops without closing closes itself, as in
execnet. Stdlib only, shipped as source.
"""

from __future__ import annotations

import builtins
import sys
import threading
from collections import deque
from functools import partial

from .._wire import (
    ACK,
    CLOSE,
    CLOSE_ERROR,
    DATA,
    FRAME_COST,
    LoadError,
    check_frame_size,
    clip_text,
    dumps_parts,
    encode_ack,
    loads,
)
from .execmodel import get_execmodel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    from .worker import Worker

__all__ = [
    "AsyncChannel",
    "Channel",
    "ChannelFileRead",
    "ChannelFileWrite",
    "GatewayHandle",
    "RemoteError",
    "format_exception",
]

_NO_ENDMARKER = object()
#: Values this large or larger are bulk: the thread that waits for one does
#: not take over the reading (see remote.reading), so that reading the next
#: overlaps with using this one.
GIFT_LIMIT = 64 * 1024


class RemoteError(Exception):
    """Raised in remote code by ``receive`` when the local side closed the
    channel with an error."""


class _Undecodable:
    """Stands in the inbox for a value whose bytes were malformed."""

    __slots__ = ("error",)

    def __init__(self, error: LoadError) -> None:
        self.error = error


class GatewayHandle:
    """What remote code sees as ``channel.gateway``."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self.id = worker.gateway_id
        self.execmodel = get_execmodel(worker.execmodel)

    def newchannel(self) -> Channel:
        """A new channel, to be sent to the local side as a value."""
        return self._worker.new_channel()


class Channel:
    """The remote end of a channel, for sync remote code (execnet's API).

    Thread-safe. Values are kept encoded until ``receive`` so that the
    reader thread never runs the decoder for someone else.
    """

    RemoteError = RemoteError
    TimeoutError = builtins.TimeoutError

    def __init__(self, worker: Worker, ident: int) -> None:
        self._worker = worker
        self.id = ident
        self.gateway = worker.handle
        self._cond = threading.Condition(threading.Lock())
        self._items: deque[tuple[Any, int]] = deque()  # (value, encoded size)
        # Receivers about to check for items or waiting (changed under _cond):
        # while there are none, a delivery appends without taking the lock.
        self._waiting = 0
        self._remote_closed = False  # the local side closed the channel
        self._input_ended = False  # no more values will come (closed, or terminating)
        self._error: str | None = None
        self._closed = False  # we will send no more
        self._outstanding = 0  # bytes sent, not yet acknowledged
        self._unacked = 0  # bytes consumed, not yet acknowledged
        self._callback: Callable[[Any], None] | None = None
        self._endmarker: object = _NO_ENDMARKER
        self._callback_failed = False
        self._served = False  # values are requests, handled inline (_serve)
        self._untimed = 0  # of _waiting, those without a timeout
        self._gift: int | None = None  # the reading duty, given with a value
        self._executing = False  # remote code runs for this channel
        self._wakeups: list[Callable[[], None]] = []  # async waiters

    def __repr__(self) -> str:
        state = "closed" if self.isclosed() else "open"
        return "<Channel id=%d %s>" % (self.id, state)

    # -- fed by the reader thread

    def _deliver(self, payload: bytes | memoryview) -> None:
        if self._closed:
            return  # raced with our close: dropped, as the peer was told
        # Decoded on arrival, in frame order, so that a channel named in a
        # value is looked up before a later frame can close and forget it
        # (and because a large payload is a view valid until the next read).
        size = len(payload)
        try:
            item = (loads(payload, self._worker.channel_for_value), size)
        except LoadError as exc:
            item = (_Undecodable(exc), size)
        if self._callback is not None:
            if self._served:
                self._worker.reading.run_inline(self._call_back, item)
            else:
                self._call_back(item)
            return
        self._items.append(item)
        # A receiver counts itself under the lock before it looks at _items,
        # so either it sees this item or this sees it: no wakeup is lost.
        if self._waiting:
            with self._cond:
                # A thread waits for this value: it reads next, itself (see
                # remote.reading), unless more was read than dispatched.
                if self._untimed and size < GIFT_LIMIT and not self._worker._frames:
                    gift = self._worker.reading.give()
                    if gift is not None:
                        self._gift = gift
                self._cond.notify()
                self._wake()
        elif self._callback is not None:  # set meanwhile, after it took the queue
            with self._cond:
                missed, self._items = list(self._items), deque()
            for item in missed:
                self._call_back(item)

    def _on_remote_close(self, error: str | None) -> None:
        self._remote_closed = True
        self._end_input(error)
        self._send_close(None)  # answer, so that both sides can forget the id

    def _end_input(self, error: str | None) -> None:
        """No more values will come: receivers drain, then get EOF/error."""
        with self._cond:
            self._input_ended = True
            self._error = error
            self._cond.notify_all()
            self._wake()
            callback, marker = self._callback, self._endmarker
        if callback is not None and marker is not _NO_ENDMARKER:
            self._call_back(marker, encoded=False)

    def _call_back(self, item: Any, encoded: bool = True) -> None:
        """Give the callback a value (or the endmarker). If it raises, the
        channel closes with its traceback and later values are dropped, as
        in execnet: the gateway and its other channels go on."""
        callback = self._callback
        if callback is None or (self._callback_failed and encoded):
            return  # after a failure, values are dropped; the endmarker still comes
        try:
            callback(self._take(item) if encoded else item)
        except Exception:
            self._callback_failed = True
            self._error = self._error or format_exception()
            self._send_close(self._error, override=True)

    def _on_ack(self, consumed: int) -> None:
        with self._cond:
            self._outstanding -= consumed
            self._cond.notify_all()
            self._wake()

    def _wake(self) -> None:
        wakeups, self._wakeups = self._wakeups, []
        for wake in wakeups:
            wake()

    # -- used by remote code

    def _take(self, item: tuple[Any, int]) -> Any:
        """Account a value as consumed and return it (or raise its LoadError)."""
        value, nbytes = item
        self._unacked += nbytes + FRAME_COST
        if self._unacked >= self._worker.window // 4:
            consumed, self._unacked = self._unacked, 0
            self._worker.write_frame(ACK, self.id, encode_ack(consumed))
        if type(value) is _Undecodable:
            raise value.error
        return value

    def _pop(self) -> tuple[Any, int] | None:
        """Next item, or None if none is there yet (caller holds _cond)."""
        if self._items:
            return self._items.popleft()
        if self._input_ended:
            if self._error is not None:
                raise RemoteError(self._error)
            raise EOFError("channel %d closed by the other side" % self.id)
        return None

    def receive(self, timeout: float | None = None) -> Any:
        """The next value; blocks until one arrives.

        :raises EOFError: when the channel was closed and drained.
        :raises RemoteError: when the other side closed it with an error.
        :raises TimeoutError: if nothing arrived within ``timeout`` seconds.
        :raises OSError: if a callback takes this channel's values.
        """
        if self._callback is not None:
            raise OSError("cannot receive(): channel %d has a receiver callback" % self.id)
        try:
            item = self._items.popleft()  # no lock while values wait
        except IndexError:
            item = self._wait_for_item(timeout)
        if self._gift is not None:
            gift, self._gift = self._gift, None
            self._worker.reading.accept(gift)
        return self._take(item)

    def _has_input(self) -> bool:
        return bool(self._items) or self._input_ended

    def _wait_for_item(self, timeout: float | None) -> tuple[Any, int]:
        reading = self._worker.reading
        if timeout is None and reading.read_for(self._has_input):
            with self._cond:  # read by this thread: no wake-up in between
                item = self._pop()
            if item is not None:
                if item[1] >= GIFT_LIMIT:  # bulk: read the next one meanwhile
                    reading.step_aside()
                return item
        reading.step_aside()  # about to wait: the reading must go on elsewhere
        with self._cond:
            self._waiting += 1
            if timeout is None:
                self._untimed += 1
            try:
                item = self._pop()
                while item is None:
                    if not self._cond.wait(timeout):
                        raise builtins.TimeoutError(
                            "no value on channel %d within %ss" % (self.id, timeout)
                        )
                    item = self._pop()
            finally:
                self._waiting -= 1
                if timeout is None:
                    self._untimed -= 1
        return item

    def __iter__(self) -> Channel:
        return self

    def __next__(self) -> Any:
        try:
            return self.receive()
        except EOFError:
            raise StopIteration from None

    next = __next__

    def _check_open(self) -> None:
        if self._closed or self._remote_closed:
            raise OSError("cannot send to closed channel %d" % self.id)

    def _encode_for_send(self, item: object) -> tuple[list[bytes | memoryview], int]:
        """The payload's pieces (see ``dumps_parts``: a large body is not
        copied into one payload) and its size."""
        self._check_open()
        parts = dumps_parts(item, self._worker.id_of_channel)
        size = len(parts[0]) if len(parts) == 1 else sum([len(part) for part in parts])
        if size > self._worker.max_frame:
            check_frame_size(b"".join(parts), self._worker.max_frame)  # raises DumpError
        return parts, size

    def _reserve(self, cost: int) -> bool:
        """Take ``cost`` bytes of window if free (caller holds _cond)."""
        if self._outstanding > 0 and self._outstanding + cost > self._worker.window:
            return False
        self._outstanding += cost
        return True

    def send(self, item: object) -> None:
        """Send a value; blocks while the receiver's window is full."""
        parts, size = self._encode_for_send(item)
        cost = size + FRAME_COST
        with self._cond:
            if not self._reserve(cost):
                parts = [b"".join(parts)]  # the value as it is now: it may change meanwhile
                while not self._reserve(cost):
                    self._check_open()
                    self._worker.reading.step_aside()  # the acknowledgement comes through a reader
                    self._cond.wait()
        self._worker.write_parts(DATA, self.id, parts, size)

    def setcallback(
        self, callback: Callable[[Any], None], endmarker: object = _NO_ENDMARKER
    ) -> None:
        """Call ``callback(value)`` from the reader thread for every value,
        first for those already queued; ``callback(endmarker)`` at close."""
        with self._cond:
            items, self._items = list(self._items), deque()
            self._callback, self._endmarker = callback, endmarker
            closed = self._input_ended
        self._worker.hold(self)  # it lives for its callback, referenced or not
        for item in items:
            self._call_back(item)
        if closed and endmarker is not _NO_ENDMARKER:
            self._call_back(endmarker, encoded=False)

    def _serve(self, callback: Callable[[Any], None], endmarker: object = _NO_ENDMARKER) -> None:
        """As :meth:`setcallback`, for a service: the reader itself runs
        ``callback`` for each request, so a quick one costs no thread
        switch; one that runs long has the reading taken over by another
        thread (see ``reading``), so requests may then be handled at the
        same time, and the callback must be thread-safe."""
        self._served = True
        self.setcallback(callback, endmarker)

    def close(self, error: str | None = None) -> None:
        """Tell the other side no more values come; ``error`` marks a failure.

        :raises OSError: for the channel of the code that is running (as in
            execnet: it closes when that code ends, with its error if any).
        """
        if self._executing:
            raise OSError("cannot explicitly close channel within remote_exec")
        self._send_close(error)

    def _send_close(self, error: str | None, override: bool = False) -> None:
        """Close, once; with ``override``, an error is sent even after a
        close without one (the code or callback failed afterwards)."""
        with self._cond:
            already, self._closed = self._closed, True
            if override and error is not None:
                already = False
        if not already:
            if error is None:
                self._worker.write_frame(CLOSE, self.id)
            else:
                message = clip_text(str(error), self._worker.max_frame)
                self._worker.write_frame(CLOSE_ERROR, self.id, message)
        self._worker.forget_if_done(self)

    def isclosed(self) -> bool:
        return self._closed or self._remote_closed

    def __del__(self) -> None:
        # Remote code dropped a channel it never closed: close it, as execnet
        # does, so that the other side is not left waiting (and no id leaks).
        if not self._closed:
            try:
                self._worker.close_dropped(self.id)
            except Exception:  # interpreter shutdown: nobody is left to tell
                pass

    def _getremoteerror(self) -> Exception | None:
        """The error (a ``RemoteError``) the other side closed the channel
        with, if any."""
        return RemoteError(self._error) if self._error is not None else None

    def makefile(self, mode: str = "w", proxyclose: bool = False) -> Any:
        """A file over the channel: ``'w'`` sends what is written, ``'r'``
        reads the values that arrive (str or bytes); ``proxyclose`` closes
        the channel when the file is closed."""
        if mode == "w":
            return ChannelFileWrite(self, proxyclose)
        if mode == "r":
            return ChannelFileRead(self, proxyclose)
        raise ValueError("mode must be 'w' or 'r', not %r" % (mode,))

    def waitclose(self, timeout: float | None = None) -> None:
        """Block until the other side closed the channel."""
        self._worker.reading.step_aside()
        with self._cond:
            if not self._cond.wait_for(lambda: self._remote_closed, timeout):
                raise builtins.TimeoutError("channel %d not closed within %ss" % (self.id, timeout))
            if self._error is not None:
                raise RemoteError(self._error)


class ChannelFileWrite:
    """``channel.makefile('w')``: each write sends one value."""

    def __init__(self, channel: Any, proxyclose: bool) -> None:
        self.channel = channel
        self._proxyclose = proxyclose

    def write(self, data: Any) -> int:
        self.channel.send(data)
        return len(data)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        if self._proxyclose:
            self.channel.close()

    @property
    def closed(self) -> bool:
        return bool(self.channel.isclosed())


class ChannelFileRead:
    """``channel.makefile('r')``: reads the values that arrive as one stream."""

    def __init__(self, channel: Any, proxyclose: bool) -> None:
        self.channel = channel
        self._proxyclose = proxyclose
        self._buffer: Any = None

    def _fill(self) -> bool:
        try:
            chunk = self.channel.receive()
        except EOFError:
            return False
        self._buffer = chunk if self._buffer is None else self._buffer + chunk
        return True

    def read(self, size: int = -1) -> Any:
        while size < 0 or self._buffer is None or len(self._buffer) < size:
            if not self._fill():
                break
        data = self._buffer if self._buffer is not None else ""
        if size >= 0:
            data, self._buffer = data[:size], data[size:]
        else:
            self._buffer = None
        return data

    def readline(self) -> Any:
        while True:
            if self._buffer is not None:
                newline = b"\n" if isinstance(self._buffer, bytes) else "\n"
                index = self._buffer.find(newline)
                if index >= 0:
                    line, self._buffer = self._buffer[: index + 1], self._buffer[index + 1 :]
                    return line
            if not self._fill():
                return self.read()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        if self._proxyclose:
            self.channel.close()


class AsyncChannel:
    """The remote end of a channel as async remote code sees it: ``send`` and
    ``receive`` are awaitable and never block the event loop on a window."""

    RemoteError = RemoteError

    def __init__(self, channel: Channel, loop: Any) -> None:
        self._channel = channel
        self._loop = loop
        self.id = channel.id
        self.gateway = channel.gateway

    def __repr__(self) -> str:
        return "<AsyncChannel id=%d>" % self.id

    async def _wait(self) -> None:
        """Wait for the next change to the channel (caller held _cond)."""
        future = self._loop.create_future()
        # A partial, not a closure: one object for the collector to track
        # per waiting channel, not a function, its cells and their tuple.
        self._channel._wakeups.append(partial(self._loop.call_soon_threadsafe, _resolve, future))
        self._channel._cond.release()
        try:
            await future
        finally:
            self._channel._cond.acquire()

    async def receive(self) -> Any:
        channel = self._channel
        try:
            return channel._take(channel._items.popleft())  # as Channel.receive
        except IndexError:
            pass
        with channel._cond:
            channel._waiting += 1
            try:
                item = channel._pop()
                while item is None:
                    await self._wait()
                    item = channel._pop()
            finally:
                channel._waiting -= 1
        return channel._take(item)

    def __aiter__(self) -> AsyncChannel:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except EOFError:
            raise StopAsyncIteration from None

    async def send(self, item: object) -> None:
        channel = self._channel
        parts, size = channel._encode_for_send(item)
        cost = size + FRAME_COST
        with channel._cond:
            if not channel._reserve(cost):
                parts = [b"".join(parts)]  # the value as it is now: it may change meanwhile
                while not channel._reserve(cost):
                    channel._check_open()
                    await self._wait()
        channel._worker.write_parts(DATA, channel.id, parts, size)

    def close(self, error: str | None = None) -> None:
        self._channel.close(error)

    def isclosed(self) -> bool:
        return self._channel.isclosed()


def _resolve(future: Any) -> None:
    if not future.done():
        future.set_result(None)


def format_exception(filename: str | None = None, source: str | None = None) -> str:
    """The current exception, formatted; ``source`` supplies the lines of
    ``filename`` so that the traceback shows the remote code itself."""
    import linecache
    import traceback

    if filename and source is not None:
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    etype, value, tb = sys.exc_info()
    try:
        # Drop the worker's own frame so the traceback starts in remote code.
        return "".join(traceback.format_exception(etype, value, tb.tb_next if tb else None))
    finally:
        if filename:
            linecache.cache.pop(filename, None)
