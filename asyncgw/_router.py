"""The router: one per gateway, the only reader of its transport.

Reading: the transport calls :meth:`Router.data_received` with whatever
bytes arrived; the router checks the worker's greeting once, decodes
frames and hands each to its channel right there, in the same callback —
no task hop between the pipe and a waiting ``receive``.

Writing: frames from every channel are appended to one buffer that is
written once per event-loop iteration (or sooner when it grows large),
so a burst of small sends costs one system call, not one each. A frame
after a quiet spell (:data:`QUIET_NS`) is written at once instead: a lone
send, most often a request about to be waited for, then costs no
scheduled flush and no extra loop iteration.

A thread of the blocking facade waiting for a value may read the
worker's pipe itself (:meth:`Router.read_for_thread`), holding the pipe
reader's duty: a value for a channel that only threads receive from is
delivered there and then; every other frame, and every frame after it, is
handed to the loop in order (:meth:`Router._hand_off`).

Invariants: after :meth:`connection_lost` or a protocol error the router is
``lost`` for good, every channel has been told, and writes raise
:class:`GatewayLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from time import monotonic_ns
from typing import TYPE_CHECKING, Any

from ._errors import BootstrapError, GatewayLost, ProtocolError
from ._wire import (
    ACK,
    CLOSE,
    CLOSE_ERROR,
    DATA,
    DEFAULT_MAX_PAYLOAD,
    HEADER,
    HELLO,
    MAGIC,
    MESSAGE_NAMES,
    PROTOCOL_VERSION,
    FrameDecoder,
    LoadError,
    decode_ack,
    loads,
)
from .transports.pipereader import read_buffer

if TYPE_CHECKING:
    from ._channel import Channel
    from .transports import Transport
    from .transports.pipereader import PipeReader

__all__ = ["Router"]

log = logging.getLogger("asyncgw")

#: Buffered output is written at once beyond this many bytes.
FLUSH_THRESHOLD = 256 * 1024
#: A frame queued this long (ns) after the last write is written at once.
QUIET_NS = 50_000
#: Payloads this large bypass the buffer (one copy fewer).
LARGE_PAYLOAD = 64 * 1024
#: The largest frame another thread writes to the worker's stream itself.
DIRECT_LIMIT = 16 * 1024


class Router:
    """Frames in, frames out, and the table of a gateway's channels."""

    def __init__(
        self,
        gateway_id: str,
        channel_factory: Callable[[int], Channel],
        max_frame: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self.gateway_id = gateway_id
        self._channel_factory = channel_factory
        self._loop = asyncio.get_running_loop()
        #: The largest payload either side accepts (the spec's ``max_frame``).
        self.max_frame = max_frame
        self._decoder = FrameDecoder(max_frame)
        self._greeted = False
        self._greeting = b""
        self.hello: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self.channels: dict[int, Channel] = {}
        #: How channels inside received values are handed to the receiver;
        #: the blocking facade replaces it with its wrapper.
        self.present_channel: Callable[[Channel], object] = _as_is
        self.transport: Transport | None = None
        self.lost: GatewayLost | None = None
        #: Why the connection ended, without the transport's diagnosis.
        self.lost_reason: str | None = None
        #: Called on the loop, once, right after the router becomes lost
        #: (supervision: :mod:`asyncgw.objects.supervision`).
        self.lost_callbacks: list[Callable[[], None]] = []
        self.closed = asyncio.Event()
        self._out: list[bytes] = []
        self._out_size = 0
        self._flush_handle: asyncio.Handle | None = None
        self._last_write = 0  # monotonic_ns() of the last frame queued
        self._writable: asyncio.Future[None] | None = None
        #: Guards every write, and the send windows of the channels, so that
        #: another thread may write a frame straight to the worker's pipe
        #: (write_from_thread) in between the loop's own writes.
        self.write_lock = threading.RLock()
        self._direct_fd: int | None = None  # our own duplicate of that pipe
        self._direct_asked = False
        self._thread_reader: PipeReader | None = None
        # Frames a reading thread handed to the loop: _handed counts those
        # not yet dispatched; while any are, a thread delivers nothing itself.
        self._handoff: list[tuple[int, int, bytes | str]] = []
        self._handed = 0
        self._handoff_lock = threading.Lock()

    def attach(self, transport: Transport) -> None:
        """Write to ``transport`` from now on."""
        self.transport = transport
        self._thread_reader = transport.thread_reader()

    def _open_direct(self) -> None:
        """On the loop, at the first write from a thread (not at attach: a
        gateway never written from a thread keeps one descriptor fewer)."""
        if self.lost is not None or self.transport is None:
            return
        fd = self.transport.stream_fd()
        try:
            if fd is None or os.get_blocking(fd):
                return
            # A duplicate: its number stays ours until we close it,
            # whatever the transport does with its own.
            direct: int | None = os.dup(fd)
        except OSError:  # closed meanwhile, or no descriptor left: the loop's path
            return
        with self.write_lock:
            if self.lost is None:
                self._direct_fd, direct = direct, None
        if direct is not None:
            os.close(direct)

    def _close_direct(self) -> None:
        with self.write_lock:
            fd, self._direct_fd = self._direct_fd, None
        if fd is not None:
            os.close(fd)

    # -- reading (StreamSink)

    def data_received(self, data: bytes | memoryview) -> None:
        if self._handed:
            self._run_handoff()  # read before this, by a thread
        if self.lost is not None:
            return
        if not self._greeted:
            data = self._check_greeting(data)
            if not data:
                return
        try:
            # A large payload comes as a view of the decoder's buffer, valid
            # until its next call: every frame is decoded before that.
            frames = self._decoder.feed_lending(data)
        except ProtocolError as exc:
            self._dispatch(exc.frames)  # what came before the bad frame
            self._fail(f"protocol error from gateway {self.gateway_id!r}: {exc}")
            return
        self._dispatch(frames)

    def read_buffers(self, spare: memoryview) -> list[memoryview]:
        """For a transport that reads into buffers it is given (``readv``):
        those the next read fills, in order; ``spare`` is its own. A large
        payload under way is read straight into the decoder's buffer. Then
        :meth:`read_filled`, with what was read, before any other call."""
        if not self._greeted or self.lost is not None:
            return [spare]
        return self._decoder.buffers(spare)

    def read_filled(self, size: int, spare: memoryview) -> None:
        """``size`` bytes were read into the buffers :meth:`read_buffers` gave."""
        if self._handed:
            self._run_handoff()  # read before this, by a thread
        if not self._greeted or self.lost is not None:
            self.data_received(spare[:size])
            return
        try:
            frames = self._decoder.filled(size, spare)
        except ProtocolError as exc:
            self._dispatch(exc.frames)  # what came before the bad frame
            self._fail(f"protocol error from gateway {self.gateway_id!r}: {exc}")
            return
        self._dispatch(frames)

    # -- reading from a thread

    def read_for_thread(self, timeout: float | None, ready: Callable[[], bool]) -> bool | None:
        """For a thread waiting for what ``ready()`` tells has come (a
        value of ``Channel.receive_from_thread``, a reply), holding no lock:
        read the worker's pipe once, for up to ``timeout`` seconds, and
        deliver what came. True: read, or found ``ready()``; look again.
        False: cannot read now (another reader holds the pipe, or frames
        handed to the loop wait for it): wait to be woken, and try again
        within :data:`~.pipereader.TICK`. None: only the loop reads here."""
        reader = self._thread_reader
        if reader is None or reader.at_end or not self._greeted or self.lost is not None:
            return None
        if self._handed or not reader.duty.acquire(blocking=False):
            return False
        ended = False
        try:
            # The loop delivers only while it holds the duty: all it
            # delivered before is seen here.
            if ready():
                return True
            spare = read_buffer()
            size = reader.read_in_thread(timeout, self._decoder.buffers(spare))
            if size == 0:
                ended = True
            elif size is not None:
                try:
                    frames = self._decoder.filled(size, spare)
                except ProtocolError as exc:
                    self._thread_reader = None  # the loop reads from now on
                    message = f"protocol error from gateway {self.gateway_id!r}: {exc}"
                    self._hand_off(exc.frames, message)
                    ended = True
                else:
                    self._dispatch_in_thread(frames)
        finally:
            reader.let_go(ended)
        return True

    def _dispatch_in_thread(self, frames: list[tuple[int, int, bytes | memoryview]]) -> None:
        channels = self.channels
        for index, (msgtype, ident, payload) in enumerate(frames):
            if msgtype == DATA and not self._handed:
                channel = channels.get(ident)
                if channel is not None and channel._deliver_in_thread(payload):
                    continue
            self._hand_off(frames[index:])
            return

    def _hand_off(
        self, frames: list[tuple[int, int, bytes | memoryview]], failure: str | None = None
    ) -> None:
        """From a reading thread: ``frames`` (then ``failure``, a protocol
        error) are the loop's to dispatch, in order after those before."""
        entries: list[tuple[int, int, bytes | str]] = [
            (msgtype, ident, payload if type(payload) is bytes else bytes(payload))
            for msgtype, ident, payload in frames
        ]
        if failure is not None:
            entries.append((-1, 0, failure))
        if not entries:
            return
        with self._handoff_lock:
            first = not self._handoff
            self._handoff.extend(entries)
            self._handed += len(entries)
        if first:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(self._run_handoff)

    def _run_handoff(self) -> None:
        with self._handoff_lock:
            entries, self._handoff = self._handoff, []
        try:
            frames = entries
            if entries and entries[-1][0] < 0:  # a protocol error ends them
                frames = entries[:-1]
            self._dispatch(frames)  # type: ignore[arg-type]
            if frames is not entries:
                self._fail(str(entries[-1][2]))
        finally:
            with self._handoff_lock:
                self._handed -= len(entries)

    def _dispatch(self, frames: list[tuple[int, int, bytes | memoryview]]) -> None:
        channels = self.channels
        for msgtype, ident, payload in frames:
            if self.lost is not None:
                return
            if msgtype == DATA:
                channel = channels.get(ident)
                if channel is None:
                    if ident & 1:  # one of ours, closed and forgotten: drop
                        continue
                    channel = self.channel_for_id(ident)
                channel._deliver(payload)
            elif msgtype == ACK:
                channel = channels.get(ident)
                if channel is not None:
                    try:
                        channel._on_ack(decode_ack(payload))
                    except ProtocolError as exc:
                        self._fail(f"protocol error from gateway {self.gateway_id!r}: {exc}")
            elif msgtype in (CLOSE, CLOSE_ERROR):
                error = str(payload, "utf-8", "replace") if msgtype == CLOSE_ERROR else None
                if ident == 0:  # the worker could not set itself up
                    self._fail_hello(f"the worker failed to start:\n{error}")
                elif (channel := channels.get(ident)) is not None:
                    channel._on_remote_close(error)
                elif not ident & 1:  # the peer's channel, never used here: just answer
                    self.write_frame(CLOSE, ident)
            elif msgtype == HELLO:
                self._on_hello(payload)
            else:
                self._fail(
                    f"gateway {self.gateway_id!r} sent an unexpected {MESSAGE_NAMES[msgtype]}"
                )
                return

    def _check_greeting(self, data: bytes | memoryview) -> bytes | memoryview:
        """Strip the worker's MAGIC; anything else there means no worker."""
        self._greeting += data
        if len(self._greeting) < len(MAGIC):
            if MAGIC.startswith(self._greeting):
                return b""
        elif self._greeting.startswith(MAGIC):
            self._greeted = True
            rest, self._greeting = self._greeting[len(MAGIC) :], b""
            return rest
        text = self._greeting[:200].decode("utf-8", "replace")
        self._fail_hello(f"the interpreter answered with {text!r} instead of an asyncgw worker")
        return b""

    def _on_hello(self, payload: bytes | memoryview) -> None:
        try:
            hello = loads(payload)
            protocol = hello["protocol"]
        except (LoadError, KeyError, TypeError):
            self._fail_hello("the worker's greeting is malformed")
            return
        if protocol != PROTOCOL_VERSION:
            self._fail_hello(
                f"the worker speaks protocol version {protocol}, this side {PROTOCOL_VERSION}"
            )
            return
        if not self.hello.done():
            self.hello.set_result(hello)

    def _fail_hello(self, message: str) -> None:
        if not self.hello.done():
            self.hello.set_exception(BootstrapError(message, self.gateway_id))
        self._fail(message)

    def connection_lost(self, reason: str) -> None:
        self._fail(f"gateway {self.gateway_id!r} lost: {reason}", reason)

    def _fail(self, message: str, reason: str | None = None) -> None:
        if self.lost is not None:
            return
        self.lost_reason = reason or message
        if self.transport is not None:
            diagnosis = self.transport.diagnosis()
            if diagnosis:
                message = f"{message} ({diagnosis})"
        self.lost = GatewayLost(message, self.gateway_id)
        self._close_direct()  # or the worker never sees the end of its input
        if self.transport is not None:
            # End of input makes a worker that is still there exit at once.
            self.transport.close_input()
        if not self.hello.done():
            self.hello.set_exception(BootstrapError(message, self.gateway_id))
            self.hello.exception()  # retrieved here; the opener re-reads it
        self._out.clear()
        for channel in list(self.channels.values()):
            channel._on_gateway_lost(self.lost)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self.closed.set()
        for callback in self.lost_callbacks:
            callback()

    # -- the channel table

    def channel_for_id(self, ident: int) -> Channel:
        channel = self.channels.get(ident)
        if channel is None:
            channel = self.channels[ident] = self._channel_factory(ident)
        return channel

    def channel_for_value(self, ident: int) -> object:
        """The channel a received value names, as the receiver presents it
        (the blocking facade wraps it). One of our own ids that is no longer
        in the table was closed and forgotten: it stays closed."""
        channel = self.channels.get(ident)
        if channel is None:
            channel = self._channel_factory(ident)
            if ident & 1:
                channel._closed = channel._remote_closed = True
                channel._end()
            else:
                self.channels[ident] = channel
        return self.present_channel(channel)

    def forget(self, channel: Channel) -> None:
        if self.channels.get(channel.id) is channel:
            del self.channels[channel.id]

    # -- writing

    def check_alive(self) -> None:
        if self.lost is not None:
            raise self.lost

    def write_frame(
        self, msgtype: int, ident: int, payload: bytes = b"", tail: bytes = b""
    ) -> None:
        """Queue a frame; it is written by the end of this loop iteration.
        Its payload is ``payload`` followed by ``tail`` (a large one, written
        as it is, not copied).

        :raises GatewayLost: if the gateway is gone.
        """
        if self.lost is not None:
            raise self.lost
        header = HEADER.pack(msgtype, ident, len(payload) + len(tail))
        with self.write_lock:
            if tail:
                self.flush()
                assert self.transport is not None
                self.transport.write(header + payload)
                self.transport.write(tail)
                return
            if len(payload) >= LARGE_PAYLOAD:
                self.flush()
                assert self.transport is not None
                self.transport.write(header)
                self.transport.write(payload)
                return
            frame = header + payload if payload else header
            now = monotonic_ns()
            if not self._out and now - self._last_write > QUIET_NS and self.transport:
                self._last_write = now
                self.transport.write(frame)
                return
            self._last_write = now
            self._out.append(frame)
            self._out_size += len(frame)
            if self._out_size >= FLUSH_THRESHOLD:
                self.flush()
            elif self._flush_handle is None:
                self._flush_handle = self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what is buffered now."""
        with self.write_lock:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
            if self._out and self.lost is None and self.transport is not None:
                out = self._out
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            self._out = []
            self._out_size = 0

    def write_from_thread(self, frame: bytes) -> bool:
        """Write ``frame`` to the worker's pipe now, from a thread other than
        the loop's, if that can be done without reordering or blocking: the
        stream is a non-blocking pipe, nothing of ours waits to be written,
        and the frame fits in one atomic pipe write. Caller holds
        :attr:`write_lock`. False: nothing was written; go through the loop.
        """
        fd = self._direct_fd
        if fd is None and not self._direct_asked:
            self._direct_asked = True
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(self._open_direct)
        if (
            fd is None
            or len(frame) > DIRECT_LIMIT
            or self._out
            or self.lost is not None
            or (self._writable is not None and not self._writable.done())
            or self.transport is None
            or self.transport.write_buffer_size()
        ):
            return False
        try:
            written = os.write(fd, frame)
        except OSError:  # full (EAGAIN) or gone: the loop's path sorts it out
            return False
        if written < len(frame):
            # The rest goes first, through the loop: nothing is written
            # directly while _out holds anything, and the loop writes _out
            # before anything else.
            self._out.append(frame[written:])
            self._out_size += len(frame) - written
            self._loop.call_soon_threadsafe(self.flush)
        return True

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    async def drain(self) -> None:
        """Wait while the transport's buffer is above its high-water mark.

        Cancelling the wait has no effect on what was already written.
        """
        writable = self._writable
        if writable is not None and not writable.done():
            await asyncio.shield(writable)
        if self.lost is not None:
            raise self.lost


def _as_is(channel: Channel) -> object:
    return channel
