"""Channel and MultiChannel: the local ends of channels.

A channel carries values both ways between local code and one piece of
remote code. Closing is for both directions, as in execnet: once either
side closes, sending raises, and receiving drains what arrived before and
then raises :class:`ChannelClosed` (or :class:`RemoteError`, or
:class:`GatewayLost`). The side that receives a close answers with one,
so both sides know when a channel id can be forgotten.

Flow control: a sender may have at most ``window`` bytes unacknowledged on a
channel (a single larger value may go when nothing is outstanding); the
receiver acknowledges in batches of a quarter window as values are
consumed, so a stalled receiver stalls only that channel's sender.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from ._errors import ChannelClosed, ChannelIOError, GatewayLost, RemoteError, TimeoutError
from ._tasks import run_all
from ._wire import (
    ACK,
    CLOSE,
    CLOSE_ERROR,
    DATA,
    FRAME_COST,
    HEADER,
    LoadError,
    check_frame_size,
    clip_text,
    dumps,
    dumps_bulk,
    encode_ack,
    loads,
)

if TYPE_CHECKING:
    from ._gateway import Gateway
    from ._router import Router

__all__ = ["NO_ENDMARKER", "Channel", "MultiChannel"]

log = logging.getLogger("asyncgw")

#: A thread that could not read the pipe for itself looks again this often
#: (the pipe reader's tick: transports.pipereader.TICK).
RETRY_READ = 0.002

#: Default bytes a sender may have unacknowledged on one channel.
DEFAULT_WINDOW: Final = 8 * 1024 * 1024


class _Undecodable:
    """Stands in the inbox for a value whose bytes were malformed."""

    __slots__ = ("error",)

    def __init__(self, error: LoadError) -> None:
        self.error = error


#: A received value (or its stand-in) and its encoded size, for flow control.
_Item = tuple[Any, int]


class _NoEndmarker:
    def __repr__(self) -> str:
        return "NO_ENDMARKER"


#: Passed as ``endmarker`` to mean "do not call back at close".
NO_ENDMARKER: Final = _NoEndmarker()


class _NamesChannel(Exception):
    """A value read by a thread names a channel: the loop must decode it."""


def _refuse_channel(ident: int) -> object:
    raise _NamesChannel


class Channel:
    """The local end of a channel; get one from ``Gateway.remote_exec`` or
    ``Gateway.newchannel``. Use it from the gateway's event loop only."""

    def __init__(self, gateway: Gateway, router: Router, ident: int) -> None:
        self.gateway = gateway
        self.id = ident
        self._router = router
        self._loop = asyncio.get_running_loop()
        self._items: deque[_Item] = deque()
        self._waiters: deque[asyncio.Future[_Item]] = deque()
        self._closed = False  # we sent a close
        self._remote_closed = False  # we received a close, or the gateway was lost
        self._error: RemoteError | GatewayLost | None = None
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._outstanding = 0
        self._unacked = 0
        self._credit: asyncio.Future[None] | None = None
        self._callback: Callable[[Any], object] | None = None
        self._endmarker: object = NO_ENDMARKER
        self._callback_dead = False  # the callback raised: values are dropped
        # Threads blocked in receive_from_thread (the blocking facade): they
        # wait on _thread_cond, which a delivery takes only while one waits.
        self._thread_waiting = 0
        self._thread_cond = threading.Condition(threading.Lock())
        #: With a callback: a thread reading for the loop offers it each
        #: value first (from that thread); True: it took the value there,
        #: False: the callback gets it on the loop, as always.
        self.thread_taker: Callable[[Any], bool] | None = None

    def __repr__(self) -> str:
        state = "closed" if self.isclosed() else "open"
        return f"<Channel id={self.id} {state}>"

    # -- events from the router

    def _deliver(self, payload: bytes | memoryview) -> None:
        if self._closed:
            return  # raced with our close: dropped, as the peer was told
        # Decoded on arrival, in frame order, so that a channel named in a
        # value is looked up before a later frame can close and forget it.
        try:
            item: _Item = (loads(payload, self._router.channel_for_value), len(payload))
        except LoadError as exc:
            item = (_Undecodable(exc), len(payload))
        if self._callback is not None:
            if not self._callback_dead:
                self._run_callback_with(item)
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return
        self._items.append(item)
        # A thread counts itself as waiting under the lock before it looks at
        # _items, so either it sees this item or this sees it: none is lost.
        if self._thread_waiting:
            self._wake_threads()

    def _deliver_in_thread(self, payload: bytes | memoryview) -> bool:
        """As :meth:`_deliver`, from a thread reading for the loop
        (``Router.read_for_thread``), for a channel only threads receive
        from, or whose :attr:`thread_taker` takes the value. False: the loop
        must deliver it (a callback, a coroutine waiting, or a channel named
        in the value: those are the loop's)."""
        if self._waiters or self._closed:
            return False
        taker = None
        if self._callback is not None:
            taker = self.thread_taker
            if taker is None or self._callback_dead:
                return False
        try:
            item: _Item = (loads(payload, _refuse_channel), len(payload))
        except _NamesChannel:
            return False
        except LoadError as exc:
            if taker is not None:
                return False  # the callback's failure is the loop's to report
            item = (_Undecodable(exc), len(payload))
        if taker is not None:
            if not taker(item[0]):
                return False
            with self._thread_cond:
                consumed = self._count(len(payload))
            if consumed:
                self._loop.call_soon_threadsafe(self._acknowledge, consumed)
            return True
        self._items.append(item)
        if self._thread_waiting:
            self._wake_threads()
        return True

    def _on_remote_close(self, error: str | None) -> None:
        if self._remote_closed:
            return
        self._remote_closed = True
        if error is not None:
            self._error = RemoteError(error)
        if not self._closed:  # answer, so that both sides can forget the id
            self._closed = True
            self._router.write_frame(CLOSE, self.id)
        self._router.forget(self)
        self._end()

    def _on_gateway_lost(self, error: GatewayLost) -> None:
        if self._remote_closed:
            return
        self._remote_closed = True
        self._error = error
        self._end()

    def _wake_threads(self) -> None:
        with self._thread_cond:
            self._thread_cond.notify_all()

    def _end(self) -> None:
        self._wake_threads()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(self._end_error())
        self._waiters.clear()
        self._release_sender()
        if not self._done.done():
            self._done.set_result(None)
        if self._callback is not None and self._endmarker is not NO_ENDMARKER:
            self._run_callback(self._endmarker)

    def _on_ack(self, consumed: int) -> None:
        with self._router.write_lock:  # send_from_thread counts too
            self._outstanding -= consumed
        self._release_sender()

    def _release_sender(self) -> None:
        if self._credit is not None and not self._credit.done():
            self._credit.set_result(None)

    def _end_error(self) -> Exception:
        if self._error is not None:
            return self._error
        if self._remote_closed:
            return ChannelClosed(f"channel {self.id} was closed by the other side")
        return ChannelClosed(f"channel {self.id} was closed")

    # -- receiving

    def _take(self, item: _Item) -> Any:
        """Account a value as consumed and return it (or raise its LoadError)."""
        value, nbytes = item
        if self.thread_taker is not None:  # a reading thread counts too
            with self._thread_cond:
                consumed = self._count(nbytes)
        else:
            consumed = self._count(nbytes)
        if consumed:
            self._router.write_frame(ACK, self.id, encode_ack(consumed))
        if type(value) is _Undecodable:
            raise value.error
        return value

    async def receive(self, timeout: float | None = None) -> Any:
        """Return the next value from the remote side.

        Cancelling the wait loses no value: one that arrived meanwhile stays
        queued for the next ``receive``.

        :raises ChannelClosed: once the channel is closed and drained.
        :raises RemoteError: if remote code raised (after the values it sent).
        :raises GatewayLost: if the remote interpreter went away.
        :raises TimeoutError: if no value came within ``timeout`` seconds.
        :raises LoadError: if the value's bytes are malformed.
        """
        if self._callback is not None:
            raise ChannelIOError(f"cannot receive(): channel {self.id} has a receiver callback")
        if self._items:
            item = self._items.popleft()
        elif self._remote_closed or self._closed:
            raise self._end_error()
        else:
            waiter: asyncio.Future[_Item] = self._loop.create_future()
            self._waiters.append(waiter)
            # About to wait, most likely for an answer to what was just sent:
            # write it now rather than one loop iteration later.
            self._router.flush()
            try:
                if timeout is None:
                    item = await waiter
                else:
                    async with asyncio.timeout(timeout):
                        item = await waiter
            except (asyncio.CancelledError, builtins.TimeoutError) as exc:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._items.appendleft(waiter.result())
                if isinstance(exc, builtins.TimeoutError):
                    raise TimeoutError(f"no value on channel {self.id} within {timeout}s") from None
                raise
        return self._take(item)

    def receive_from_thread(self, timeout: float | None = None) -> Any:
        """``receive`` for a thread other than the loop's (the blocking
        facade): it waits on a condition that deliveries notify, so taking
        a value costs the loop nothing; only an acknowledgement, once per
        quarter window, is handed to the loop. Same results and errors as
        :meth:`receive`; an interrupted wait consumes nothing.

        :raises ChannelIOError: if a callback takes this channel's values.
        """
        cond = self._thread_cond
        deadline = None if timeout is None else time.monotonic() + timeout
        with cond:
            self._thread_waiting += 1
            try:
                while True:
                    if self._callback is not None:
                        raise ChannelIOError(
                            f"cannot receive(): channel {self.id} has a receiver callback"
                        )
                    if self._items:
                        value, nbytes = self._items.popleft()
                        break
                    if self._remote_closed or self._closed:
                        raise self._end_error()
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"no value on channel {self.id} within {timeout}s")
                    # Read the pipe while waiting, rather than be woken by
                    # the loop's thread once it has: one thread switch less.
                    cond.release()
                    try:
                        read = self._router.read_for_thread(left, self._thread_ready)
                    finally:
                        cond.acquire()
                    if read:
                        continue
                    if read is False:  # not now: woken, or look again soon
                        cond.wait(RETRY_READ if left is None else min(left, RETRY_READ))
                    elif not cond.wait(left):
                        raise TimeoutError(f"no value on channel {self.id} within {timeout}s")
            finally:
                self._thread_waiting -= 1
            # Receiving threads serialize here; the loop does not touch
            # _unacked of a channel read this way (no callback, no await).
            consumed = self._count(nbytes)
        if consumed:
            self._loop.call_soon_threadsafe(self._acknowledge, consumed)
        if type(value) is _Undecodable:
            raise value.error
        return value

    def _count(self, nbytes: int) -> int:
        """Account ``nbytes`` of a value as consumed; what to acknowledge
        now (a quarter window's worth), or 0."""
        self._unacked += nbytes + FRAME_COST
        if self._unacked >= self.gateway.window // 4 and not self._remote_closed:
            consumed, self._unacked = self._unacked, 0
            return consumed
        return 0

    def _thread_ready(self) -> bool:
        return bool(self._items) or self._remote_closed or self._closed

    def _acknowledge(self, consumed: int) -> None:
        if not self._remote_closed and self._router.lost is None:
            self._router.write_frame(ACK, self.id, encode_ack(consumed))

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            try:
                item = await self.receive()
            except ChannelClosed:
                return
            yield item

    def setcallback(
        self, callback: Callable[[Any], object], endmarker: object = NO_ENDMARKER
    ) -> None:
        """Call ``callback(value)`` for each value as it arrives, starting
        with any already queued, and ``callback(endmarker)`` when the channel
        ends (if given). A callback that raises closes the channel with the
        error. The callback runs on the event loop; it must not block."""
        if self._callback is not None:
            raise RuntimeError(f"channel {self.id} already has a callback")
        self._callback, self._endmarker = callback, endmarker
        queued, self._items = self._items, deque()
        for item in queued:
            self._run_callback_with(item)
        if self._remote_closed and endmarker is not NO_ENDMARKER:
            self._run_callback(endmarker)

    def _run_callback_with(self, item: _Item) -> None:
        try:
            value = self._take(item)
        except LoadError as exc:
            self.callback_failed(f"malformed value: {exc}")
            return
        self._run_callback(value)

    def _run_callback(self, item: object) -> None:
        assert self._callback is not None
        try:
            self._callback(item)
        except Exception:
            self.callback_failed(traceback.format_exc())

    def callback_failed(self, formatted: str) -> None:
        """The callback raised (``formatted`` is its traceback): as in
        execnet, the channel closes with that error, which remote code gets
        from its ``receive``; here ``waitclose`` raises it as a
        :class:`RemoteError`; later values are dropped and the endmarker
        still comes, once. The gateway and its other channels go on."""
        log.error("callback of channel %d failed:\n%s", self.id, formatted)
        if self._error is None:
            self._error = RemoteError(formatted)
        self._callback_dead = True
        if not self._closed and self._router.lost is None:
            self.close(formatted)

    # -- sending

    async def send(self, item: object) -> None:
        """Send ``item``; waits while the remote side's window is full.

        Cancelling the wait sends nothing.

        :raises DumpError: if ``item`` holds a type the wire cannot carry.
        :raises ChannelIOError: if the channel is closed.
        :raises GatewayLost: if the remote interpreter went away.
        """
        kind = type(item)
        bulk = dumps_bulk(item) if kind is bytes or kind is str else None
        if bulk is None:
            await self.send_encoded(self.encode(item))
            return
        # A large bytes or str value: written after its head, not copied
        # into a payload first (a fresh megabyte a send, page faults and all).
        self._check_sendable()
        head, body = bulk
        if len(head) + len(body) > self._router.max_frame:
            check_frame_size(head + body, self._router.max_frame)  # raises DumpError
        await self.send_encoded(head, body)

    def encode(self, item: object) -> bytes:
        """The payload ``send`` would write for ``item``. Thread-safe: the
        blocking facade encodes in the caller's thread.

        :raises DumpError: if ``item`` holds a type the wire cannot carry.
        :raises ChannelIOError: if the channel is closed.
        """
        self._check_sendable()
        return check_frame_size(dumps(item, self._router_id_of), self._router.max_frame)

    def _check_sendable(self) -> None:
        if self._closed or self._remote_closed:
            if isinstance(self._error, GatewayLost):
                raise self._error
            raise ChannelIOError(f"cannot send to closed channel {self.id}")

    async def send_encoded(self, payload: bytes, tail: bytes = b"") -> None:
        """Send a payload made by :meth:`encode`; the second half of ``send``
        (the payload ``payload + tail``, if given a ``tail``). Cancelling
        the wait sends nothing."""
        while True:
            # Wait for the transport before queueing, not after: a send
            # cancelled while it waits has then sent nothing.
            if self._router._writable is not None:
                await self._router.drain()
            if self.send_encoded_nowait(payload, tail):
                return
            self._credit = self._loop.create_future()
            await self._credit

    def send_encoded_nowait(self, payload: bytes, tail: bytes = b"") -> bool:
        """Queue ``payload`` (followed by ``tail``) for writing if the remote
        window has room for it; return False, having done nothing, if it has not.

        :raises ChannelIOError: if the channel is closed.
        :raises GatewayLost: if the remote interpreter went away.
        """
        self._check_sendable()
        cost = len(payload) + len(tail) + FRAME_COST
        with self._router.write_lock:
            if self._outstanding > 0 and self._outstanding + cost > self.gateway.window:
                return False
            self._outstanding += cost
            self._router.write_frame(DATA, self.id, payload, tail)
        return True

    def send_from_thread(self, payload: bytes) -> bool:
        """The blocking facade's fast send: write the frame to the worker's
        pipe from the calling thread, without waking the loop, when the
        router can (:meth:`Router.write_from_thread`) and the window has
        room. False: nothing was sent; use :meth:`send_encoded_nowait` on
        the loop. The caller keeps its sends on this channel in order."""
        cost = len(payload) + FRAME_COST
        frame = HEADER.pack(DATA, self.id, len(payload)) + payload
        with self._router.write_lock:
            if self._closed or self._remote_closed:
                return False  # the loop's path raises the right error
            if self._outstanding > 0 and self._outstanding + cost > self.gateway.window:
                return False
            if not self._router.write_from_thread(frame):
                return False
            self._outstanding += cost
        return True

    def flush(self) -> None:
        """Write what this gateway has queued now rather than at the end of
        the loop iteration (for a send whose answer is awaited at once)."""
        self._router.flush()

    def _router_id_of(self, obj: object) -> int | None:
        # Facade wrappers name their channel in `_channel`.
        channel = getattr(obj, "_channel", obj)
        if isinstance(channel, Channel) and channel._router is self._router:
            return channel.id
        return None

    def close(self, error: str | None = None) -> None:
        """Close the channel both ways; ``error`` reaches remote code as a
        ``RemoteError`` from its ``receive``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._router.lost is None:
            if error is None:
                self._router.write_frame(CLOSE, self.id)
            else:
                message = clip_text(str(error), self._router.max_frame)
                self._router.write_frame(CLOSE_ERROR, self.id, message)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(ChannelClosed(f"channel {self.id} was closed"))
        self._waiters.clear()
        self._wake_threads()
        self._release_sender()

    def isclosed(self) -> bool:
        """True once either side closed the channel (or the gateway was lost)."""
        return self._closed or self._remote_closed

    async def waitclose(self, timeout: float | None = None) -> None:
        """Wait until the remote side closes the channel (its code finished).
        Cancelling the wait changes nothing on the channel.

        :raises RemoteError: if the remote code raised.
        :raises GatewayLost: if the gateway went away first.
        :raises TimeoutError: if it did not close within ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._done)
        except builtins.TimeoutError:
            raise TimeoutError(f"channel {self.id} not closed within {timeout}s") from None
        if self._error is not None:
            raise self._error

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


C = TypeVar("C")


class ChannelList(Generic[C]):
    """The sequence behaviour both MultiChannels share (async and blocking)."""

    def __init__(self, channels: Iterable[C]) -> None:
        self._channels = list(channels)

    def __len__(self) -> int:
        return len(self._channels)

    def __iter__(self) -> Iterator[C]:
        return iter(self._channels)

    def __getitem__(self, index: int) -> C:
        return self._channels[index]

    def __contains__(self, channel: object) -> bool:
        return channel in self._channels

    def __repr__(self) -> str:
        return f"<MultiChannel {self._channels!r}>"


class MultiChannel(ChannelList[Channel]):
    """Several channels used as one, e.g. from ``Group.remote_exec``."""

    async def send_each(self, item: object) -> None:
        """Send ``item`` on every channel, concurrently. Cancelling cancels
        the sends still waiting; those already written stay sent."""
        await run_all(channel.send(item) for channel in self._channels)

    async def receive_each(self, withchannel: bool = False) -> list[Any]:
        """One value from each channel, in channel order; with
        ``withchannel``, ``(channel, value)`` pairs. If one fails or the call
        is cancelled, values already taken stay taken (they are lost)."""
        values = await run_all(channel.receive() for channel in self._channels)
        if withchannel:
            return list(zip(self._channels, values, strict=True))
        return values

    def make_receive_queue(
        self, endmarker: object = NO_ENDMARKER
    ) -> asyncio.Queue[tuple[Channel, Any]]:
        """A queue of ``(channel, value)`` from all channels, filled by
        callbacks; ``(channel, endmarker)`` when a channel ends, if given."""
        queue: asyncio.Queue[tuple[Channel, Any]] = asyncio.Queue()

        def forward_from(channel: Channel) -> Callable[[Any], None]:
            return lambda item: queue.put_nowait((channel, item))

        for channel in self._channels:
            channel.setcallback(forward_from(channel), endmarker)
        return queue

    async def waitclose(self, timeout: float | None = None) -> None:
        """Wait for every channel to close; the first error is raised.
        Cancelling the wait changes nothing on the channels."""
        await run_all(channel.waitclose(timeout) for channel in self._channels)
