"""The blocking facade's channels: :class:`Channel` and :class:`MultiChannel`
of :mod:`asyncgw.sync`, with the hand-offs between caller threads and the
loop thread.

Two hand-offs are cheaper than a portal round trip because they are hot:
``send`` writes a small frame to the worker's stream from the caller's
thread when the core can (``Channel.send_from_thread``), and otherwise
queues the bytes in an :class:`_Outbox` that one loop task writes, in order;
``receive`` waits on a condition of the core channel that deliveries
notify (``Channel.receive_from_thread``). Callbacks run on a thread of their
own, so they may block and use the blocking API.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

from .. import _channel
from .._errors import ChannelClosed, RemoteError, TimeoutError
from .._loopthread import call_blocking as _run_sync
from .._loopthread import loop_thread, submit
from .._loopthread import run_blocking as _run
from ..remote.channel import ChannelFileRead, ChannelFileWrite

if TYPE_CHECKING:
    from .. import _gateway
    from .gateway import Gateway

__all__ = [
    "NO_ENDMARKER",
    "OUTBOX_LIMIT",
    "Channel",
    "MultiChannel",
    "present",
    "register_gateway_facade",
    "run_inline",
]

NO_ENDMARKER = _channel.NO_ENDMARKER

#: Bytes a channel's senders may queue ahead of the loop before blocking.
OUTBOX_LIMIT = 1024 * 1024


_facades: weakref.WeakKeyDictionary[_channel.Channel, Channel] = weakref.WeakKeyDictionary()
_facades_lock = threading.Lock()


#: The facade of a core gateway, for :attr:`Channel.gateway`: registered by
#: :mod:`asyncgw.sync.gateway`, which builds on this module (a registration
#: point, not an import back up).
_present_gateway: Callable[[_gateway.Gateway], Gateway] | None = None


def register_gateway_facade(function: Callable[[_gateway.Gateway], Gateway]) -> None:
    """Make ``function(core_gateway)`` the facade that :attr:`Channel.gateway`
    gives (done once, by :mod:`asyncgw.sync.gateway`)."""
    global _present_gateway
    _present_gateway = function


def present(channel: _channel.Channel) -> Channel:
    """The one facade of a core channel (so its queue of sends is shared)."""
    with _facades_lock:
        facade = _facades.get(channel)
        if facade is None:
            facade = _facades[channel] = Channel(channel)
        return facade


class _Outbox:
    """Payloads queued by caller threads, sent in order by one loop task."""

    def __init__(self, channel: _channel.Channel) -> None:
        self._channel = channel
        self._cond = threading.Condition(threading.Lock())
        self._waiting = 0  # senders blocked on a full outbox
        self._pending: deque[bytes] = deque()
        self._queued = 0  # bytes in _pending or being sent
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.Event | None = None

    def send_now(self, payload: bytes) -> bool:
        """Write ``payload`` from this thread, if nothing queued here must go
        first and the core can (:meth:`Channel.send_from_thread`): no hop to
        the loop thread. False: nothing was sent."""
        with self._cond:
            return (
                not self._queued and self._error is None and self._channel.send_from_thread(payload)
            )

    def put(self, payload: bytes, timeout: float | None = None) -> None:
        """Queue ``payload``; block while the outbox is full, at most
        ``timeout`` seconds (then raise ``TimeoutError``, nothing queued)."""
        with self._cond:
            if self._queued >= OUTBOX_LIMIT and self._error is None and not self._wait(timeout):
                raise TimeoutError(
                    f"channel {self._channel.id}: the remote side did not take"
                    f" values for {timeout}s (its window is full); nothing was sent"
                )
            if self._error is not None:
                raise self._error
            self._pending.append(payload)
            self._queued += len(payload)
            start = self._task is None
            if start:
                self._task = _STARTING
        if start:
            submit(self._start)

    def _wait(self, timeout: float | None) -> bool:
        """Wait for room (caller holds _cond); False if ``timeout`` passed."""
        self._waiting += 1
        try:
            return self._cond.wait_for(
                lambda: self._queued < OUTBOX_LIMIT or self._error is not None, timeout
            )
        finally:
            self._waiting -= 1

    def _wake_senders(self) -> None:
        """Caller holds _cond: wake senders waiting for room, if any."""
        if self._waiting:
            self._cond.notify_all()

    def _start(self) -> None:
        """On the loop: write what the window allows right here; only a
        send that has to wait costs a task."""
        with self._cond:
            pending = self._pending
            sent = 0
            try:
                while pending and self._channel.send_encoded_nowait(pending[0]):
                    sent += len(pending.popleft())
            except BaseException as exc:  # recorded for the senders
                self._error = exc
                pending.clear()
                sent = self._queued
            self._queued -= sent
            self._wake_senders()
            if not pending:
                self._task = None
                # A thread is likely to wait for the answer: write now, not
                # at the end of this loop iteration.
                self._channel.flush()
                return
        self._idle = self._idle or asyncio.Event()
        self._idle.clear()
        self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            with self._cond:
                batch, self._pending = self._pending, deque()
                if not batch:
                    self._task = None
                    assert self._idle is not None
                    self._idle.set()
                    return
            sent = 0
            try:
                for payload in batch:
                    await self._channel.send_encoded(payload)
                    sent += len(payload)
            except BaseException as exc:
                with self._cond:
                    self._error = exc
                    self._pending.clear()
                    self._queued = 0
                    self._task = None
                    self._cond.notify_all()  # an error: everyone must see it
                assert self._idle is not None
                self._idle.set()
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            with self._cond:
                self._queued -= sent
                self._wake_senders()

    async def flushed(self) -> None:
        """Wait until what was queued before this call is written."""
        if self._task is not None and self._idle is not None:
            await self._idle.wait()


#: Marks an outbox whose task is scheduled but not yet created.
_STARTING: Any = object()


class Channel:
    """A channel with execnet's blocking API. Thread-safe."""

    RemoteError = RemoteError
    TimeoutError = TimeoutError

    def __init__(self, channel: _channel.Channel) -> None:
        self._channel = channel
        self._outbox = _Outbox(channel)
        self.id = channel.id
        self._forward: _Callback | None = None

    @property
    def gateway(self) -> Gateway:
        """The gateway this channel belongs to."""
        if _present_gateway is None:  # asyncgw.sync imports .gateway first
            raise RuntimeError("asyncgw.sync.gateway is not imported")
        return _present_gateway(self._channel.gateway)

    def __repr__(self) -> str:
        return repr(self._channel)

    def send(self, item: object, timeout: float | None = None) -> None:
        """Send ``item``; blocks only while the remote window is full, at
        most ``timeout`` seconds (None: as long as it takes).

        :raises DumpError: at once, for a type the wire cannot carry.
        :raises ChannelClosed: (an ``OSError`` in execnet) if closed.
        :raises TimeoutError: if the window stayed full; nothing was sent.
        """
        payload = self._channel.encode(item)
        if not self._outbox.send_now(payload):
            self._outbox.put(payload, timeout)

    def receive(self, timeout: float | None = None) -> Any:
        """The next value; blocks up to ``timeout`` seconds (None: forever).

        :raises EOFError: (:class:`ChannelClosed`) at the end of the stream.
        :raises RemoteError: if remote code raised.
        :raises TimeoutError: if nothing came in time.
        """
        if loop_thread.in_loop_thread():
            raise RuntimeError("asyncgw.sync cannot block the loop thread (from a callback?)")
        return self._channel.receive_from_thread(timeout)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        """The next value (:meth:`receive`); ``StopIteration`` once the
        channel is closed (execnet's ``next``)."""
        try:
            return self.receive()
        except ChannelClosed:
            raise StopIteration from None

    next = __next__

    def waitclose(self, timeout: float | None = None) -> None:
        """Block until the remote side closed the channel and, as in execnet,
        the callback (if any) has had every value and the endmarker.

        :raises RemoteError: if remote code (or the callback) raised.
        :raises TimeoutError: if that did not happen within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            _run(self._channel.waitclose, timeout)
        finally:
            forward = self._forward
            if forward is not None and not _callbacks.in_callback_thread():
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not forward.wait_idle(left):
                    raise TimeoutError(f"channel {self.id}: callback still busy after {timeout}s")
        error = self._channel._error
        if error is None and self._forward is not None:
            error = self._forward.error
        if error is not None:
            raise error

    def close(self, error: str | None = None) -> None:
        """Close both ways, after the values already sent."""
        _run(self._close, error)

    async def _close(self, error: str | None) -> None:
        await self._outbox.flushed()
        self._channel.close(error)

    def isclosed(self) -> bool:
        """Whether the channel is closed (no more values will arrive)."""
        return self._channel.isclosed()

    def _getremoteerror(self) -> Exception | None:
        """The error the channel ended with (execnet's name), if any."""
        return self._channel._error

    def setcallback(
        self, callback: Callable[[Any], object], endmarker: object = NO_ENDMARKER
    ) -> None:
        """Call ``callback(value)`` for each value, on the facade's callback
        thread (so it may block); ``callback(endmarker)`` at the end."""
        if getattr(callback, "__func__", callback) in _inline_callbacks:
            _run_sync(self._channel.setcallback, _InlineCallback(callback), endmarker)
            return
        forward = _callbacks.forwarder(self._channel, callback)
        forward.endmarker = endmarker
        _run_sync(self._channel.setcallback, forward, endmarker)
        self._forward = forward

    def makefile(self, mode: str = "w", proxyclose: bool = False) -> IO[Any]:
        """A file object over the channel: ``'w'`` sends what is written,
        ``'r'`` reads what arrives (bytes or str values)."""
        if mode == "w":
            return ChannelFileWrite(self, proxyclose)  # type: ignore[return-value]
        if mode == "r":
            return ChannelFileRead(self, proxyclose)  # type: ignore[return-value]
        raise ValueError(f"mode must be 'w' or 'r', not {mode!r}")


class _CallbackThread:
    """Runs channel callbacks off the loop, in arrival order (so they may
    block and use this API). A callback that raises closes its channel
    with the traceback, as in execnet; the thread goes on for the others."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[_Callback, Any]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def forwarder(self, channel: _channel.Channel, callback: Callable[[Any], object]) -> _Callback:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="asyncgw-callbacks", daemon=True
                )
                self._thread.start()
        forward = _Callback(channel, callback, self._queue.put)
        return forward

    def in_callback_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _serve(self) -> None:
        while True:
            forward, item = self._queue.get()
            try:
                # After a failure, execnet drops the values but not the endmarker.
                if forward.error is None or item is forward.endmarker:
                    forward.callback(item)
            except Exception:
                formatted = traceback.format_exc()
                forward.error = RemoteError(formatted)
                loop = loop_thread.loop
                if loop is not None and not loop.is_closed():
                    loop.call_soon_threadsafe(forward.channel.callback_failed, formatted)
            finally:
                forward.done_one()


class _Callback:
    """A user's callback as the core channel calls it: queues the value
    (channels as facades) for the callback thread."""

    __slots__ = ("_idle", "_pending", "callback", "channel", "endmarker", "error", "put")

    def __init__(
        self,
        channel: _channel.Channel,
        callback: Callable[[Any], object],
        put: Callable[[tuple[_Callback, Any]], None],
    ) -> None:
        self.channel = channel
        self.callback = callback
        self.put = put
        self.error: RemoteError | None = None  # the callback raised this
        self.endmarker: object = NO_ENDMARKER
        self._pending = 0  # values queued, not yet called back with
        self._idle = threading.Condition()

    def __call__(self, item: Any) -> None:
        with self._idle:
            self._pending += 1
        self.put((self, _facade_value(item)))

    def done_one(self) -> None:
        with self._idle:
            self._pending -= 1
            if not self._pending:
                self._idle.notify_all()

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until every value queued so far was called back with."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._pending, timeout)


_callbacks = _CallbackThread()

#: Functions (or the functions of bound methods) that :meth:`Channel.setcallback`
#: runs on the loop thread itself: see :func:`run_inline`.
_inline_callbacks: set[Callable[..., object]] = set()


def run_inline(function: Callable[..., object]) -> None:
    """Have ``function``, given to :meth:`Channel.setcallback` (itself or as
    a bound method), called on the loop thread as each value arrives, as
    execnet calls every callback on its receiver thread, rather than on the
    callback thread: one thread hand-off less per value. Only for callbacks
    that never wait: they hand values on (to a queue, say) and may send,
    but a blocking call of this API from them raises ``RuntimeError``.
    pytest-xdist's controller registers its per-event callback
    (:mod:`asyncgw.xdist`). A callback that raises closes its channel with
    the error, as on the callback thread."""
    _inline_callbacks.add(function)


class _InlineCallback:
    """A callback run by the core channel on the loop (channels as facades)."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[Any], object]) -> None:
        self.callback = callback

    def __call__(self, item: Any) -> None:
        self.callback(present(item) if isinstance(item, _channel.Channel) else item)


def _facade_value(item: Any) -> Any:
    return present(item) if isinstance(item, _channel.Channel) else item


class MultiChannel(_channel.ChannelList[Channel]):
    """Several channels used as one."""

    def send_each(self, item: object) -> None:
        """Send ``item`` on every channel."""
        for channel in self._channels:
            channel.send(item)

    def receive_each(self, withchannel: bool = False) -> list[Any]:
        """One value from each channel, in order (``(channel, value)``
        pairs with ``withchannel``).

        :raises RemoteError: if a channel's remote code failed.
        """
        if withchannel:
            return [(channel, channel.receive()) for channel in self._channels]
        return [channel.receive() for channel in self._channels]

    def make_receive_queue(self, endmarker: object = NO_ENDMARKER) -> queue.Queue[Any]:
        """A ``queue.Queue`` of ``(channel, value)`` from all channels."""
        received: queue.Queue[Any] = queue.Queue()
        for channel in self._channels:
            channel.setcallback(functools.partial(_put_pair, received, channel), endmarker)
        return received

    def waitclose(self, timeout: float | None = None) -> None:
        """Wait for every channel to close; then raise the first
        :class:`RemoteError`, if any (as execnet, after waiting for all)."""
        first: RemoteError | None = None
        for channel in self._channels:
            try:
                # Channel-like objects of execnet's own take no timeout.
                channel.waitclose() if timeout is None else channel.waitclose(timeout)
            except RemoteError as exc:
                first = first or exc
        if first is not None:
            raise first


def _put_pair(received: queue.Queue[Any], channel: Channel, item: Any) -> None:
    received.put((channel, item))
