"""The remote worker: the main loop of a gateway's far side.

Shipped as source with ``_wire`` (see ``_bootstrap``) to interpreters of
Python >= 3.9; stdlib only, and it imports asyncio only when async remote
code runs, because importing asyncio costs several interpreter starts.

Threads: one reader (the main thread, or a helper thread under the
``main_thread_only`` model) owns the input stream and dispatches frames;
each piece of sync remote code runs in a thread of its own and writes its
frames itself under a lock, so no hop stands between remote code and the
stream. Async remote code runs on one lazily started event-loop thread.

Invariants: the protocol streams are private descriptors — fd 0 reads
/dev/null and fd 1 is stderr (/dev/null for execnet's code) — so
``print`` or ``input`` in remote code can never corrupt the stream. End
of input means the local side is gone: the worker exits at once, so no
orphan outlives its parent.
"""

from __future__ import annotations

import builtins
import os
import sys
import threading
import weakref
from collections import deque

from ._wire import (
    ACK,
    CLOSE,
    CLOSE_ERROR,
    DATA,
    DEFAULT_MAX_PAYLOAD,
    EXEC,
    FRAME_COST,
    HEADER,
    HELLO,
    MAGIC,
    PROTOCOL_VERSION,
    REQUEST,
    TERMINATE,
    DataFormatError,
    DumpError,
    FrameDecoder,
    LoadError,
    ProtocolError,
    check_frame_size,
    clip_text,
    decode_ack,
    dumps,
    encode_ack,
    loads,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect
PYCF_ALLOW_TOP_LEVEL_AWAIT = 0x2000  # ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
READ_SIZE = 256 * 1024
_NO_ENDMARKER = object()
#: execnet's words for a remote_exec refused under ``main_thread_only``.
MAIN_THREAD_ONLY_DEADLOCK_TEXT = (
    "concurrent remote_exec would cause deadlock for main_thread_only execmodel"
)
#: Seconds a remote_exec waits for the main thread before that refusal
#: (execnet's figure: long enough that the previous code, which has
#: closed its channel, has surely let go of the main thread).
MAIN_THREAD_WAIT = 1.0
#: Seconds interrupted code has to end before a terminating worker leaves.
INTERRUPT_WAIT = 2.0


class RemoteError(Exception):
    """Raised in remote code by ``receive`` when the local side closed the
    channel with an error."""


class _Undecodable:
    """Stands in the inbox for a value whose bytes were malformed."""

    __slots__ = ("error",)

    def __init__(self, error: LoadError) -> None:
        self.error = error


class ExecModel:
    """execnet's execution model object (``channel.gateway.execmodel``):
    the threading primitives remote code should use. Only the ``thread``
    and ``main_thread_only`` backends exist here; both are OS threads."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def __repr__(self) -> str:
        return "<ExecModel %r>" % self.backend

    @property
    def queue(self) -> Any:
        import queue

        return queue

    @property
    def subprocess(self) -> Any:
        import subprocess

        return subprocess

    @property
    def socket(self) -> Any:
        import socket

        return socket

    def start(self, func: Callable[..., object], args: tuple[Any, ...] = ()) -> None:
        threading.Thread(target=func, args=args, daemon=True).start()

    def get_ident(self) -> int:
        return threading.get_ident()

    def sleep(self, delay: float) -> None:
        import time

        time.sleep(delay)

    def fdopen(self, fd: int, mode: str, bufsize: int = 1, closefd: bool = True) -> Any:
        return os.fdopen(fd, mode, bufsize, encoding="utf-8", closefd=closefd)

    def Lock(self) -> Any:  # noqa: N802 - execnet's name; an RLock, as execnet's is
        return threading.RLock()

    def RLock(self) -> Any:  # noqa: N802 - execnet's name
        return threading.RLock()

    def Event(self) -> threading.Event:  # noqa: N802 - execnet's name
        return threading.Event()


EXECMODELS = {name: ExecModel(name) for name in ("thread", "main_thread_only")}


def get_execmodel(backend: str | ExecModel) -> ExecModel:
    """The execution model named ``backend`` (execnet's function)."""
    if isinstance(backend, ExecModel):
        return backend
    try:
        return EXECMODELS[backend]
    except KeyError:
        raise ValueError(
            "unknown execmodel %r (asyncgw has %s)" % (backend, ", ".join(sorted(EXECMODELS)))
        ) from None


class _GatewayHandle:
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
        self._executing = False  # remote code runs for this channel
        self._wakeups: list[Callable[[], None]] = []  # async waiters

    def __repr__(self) -> str:
        state = "closed" if self.isclosed() else "open"
        return "<Channel id=%d %s>" % (self.id, state)

    # -- fed by the reader thread

    def _deliver(self, payload: bytes) -> None:
        if self._closed:
            return  # raced with our close: dropped, as the peer was told
        # Decoded on arrival, in frame order, so that a channel named in a
        # value is looked up before a later frame can close and forget it.
        try:
            item = (loads(payload, self._worker.channel_for_value), len(payload))
        except LoadError as exc:
            item = (_Undecodable(exc), len(payload))
        if self._callback is not None:
            self._call_back(item)
            return
        self._items.append(item)
        # A receiver counts itself under the lock before it looks at _items,
        # so either it sees this item or this sees it: no wakeup is lost.
        if self._waiting:
            with self._cond:
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
            self._error = self._error or _format_exception()
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
            return self._take(self._items.popleft())  # no lock while values wait
        except IndexError:
            pass
        with self._cond:
            self._waiting += 1
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
        return self._take(item)

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

    def _encode_for_send(self, item: object) -> bytes:
        self._check_open()
        return check_frame_size(dumps(item, self._worker.id_of_channel), self._worker.max_frame)

    def _reserve(self, cost: int) -> bool:
        """Take ``cost`` bytes of window if free (caller holds _cond)."""
        if self._outstanding > 0 and self._outstanding + cost > self._worker.window:
            return False
        self._outstanding += cost
        return True

    def send(self, item: object) -> None:
        """Send a value; blocks while the receiver's window is full."""
        payload = self._encode_for_send(item)
        cost = len(payload) + FRAME_COST
        with self._cond:
            while not self._reserve(cost):
                self._check_open()
                self._cond.wait()
        self._worker.write_frame(DATA, self.id, payload)

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

        def wake() -> None:
            self._loop.call_soon_threadsafe(_resolve, future)

        self._channel._wakeups.append(wake)
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
        payload = channel._encode_for_send(item)
        cost = len(payload) + FRAME_COST
        with channel._cond:
            while not channel._reserve(cost):
                channel._check_open()
                await self._wait()
        channel._worker.write_frame(DATA, channel.id, payload)

    def close(self, error: str | None = None) -> None:
        self._channel.close(error)

    def isclosed(self) -> bool:
        return self._channel.isclosed()


def _resolve(future: Any) -> None:
    if not future.done():
        future.set_result(None)


class _ThreadPool:
    """Threads for sync remote code, reused: starting a thread costs more
    than a round trip. Grows to the peak number of concurrent executions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[list[Any]] = []  # [wakeup lock, job] per idle thread

    def run(self, function: Callable[..., None], args: tuple[Any, ...]) -> None:
        with self._lock:
            if self._idle:
                slot = self._idle.pop()
                slot[1] = (function, args)
                slot[0].release()  # wake that thread
                return
        slot = [threading.Lock(), (function, args)]
        slot[0].acquire()
        thread = threading.Thread(target=self._serve, args=(slot,), name="asyncgw-exec")
        thread.daemon = True
        thread.start()

    def _serve(self, slot: list[Any]) -> None:
        while True:
            function, args = slot[1]
            slot[1] = None
            function(*args)
            with self._lock:
                self._idle.append(slot)
            slot[0].acquire()  # until run() hands this thread a job


class Worker:
    """Owns the streams, the channel table and the execution of remote code."""

    def __init__(self, rfd: int, wfd: int, config: dict[str, Any]) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.gateway_id = config.get("id")
        self.window = int(config.get("window", 8 * 1024 * 1024))
        self.execmodel = config.get("execmodel") or "thread"
        self.max_frame = int(config.get("max_frame") or DEFAULT_MAX_PAYLOAD)
        self.handle = _GatewayHandle(self)
        self._write_lock = threading.RLock()  # a collected channel's close may nest
        self._lock = threading.Lock()  # guards the fields below
        # Channels live as long as something references them: remote code,
        # a queue they wait in, running code; those with a callback are held.
        self._channels: weakref.WeakValueDictionary[int, Channel] = weakref.WeakValueDictionary()
        self._held: dict[int, Channel] = {}
        self._async_runs: set[Any] = set()  # futures of running async code
        self._writer = 0  # the thread inside write_frame
        self._dropped: list[int] = []  # closes of channels collected meanwhile
        self._next_id = 2  # the remote side numbers its channels even
        self._executing = 0
        self._terminating = False
        self._idle = threading.Condition(self._lock)
        self._loop: Any = None
        self._main_jobs: deque[tuple[Channel, tuple[Any, ...]]] = deque()
        self._main_busy = False
        self._threads = _ThreadPool()
        self._compiled: dict[tuple[str, str], Any] = {}
        self._main_wake = threading.Condition(threading.Lock())

    # -- output

    def write_frame(self, msgtype: int, ident: int, payload: bytes = b"") -> None:
        header = HEADER.pack(msgtype, ident, len(payload))
        with self._write_lock:
            self._writer = threading.get_ident()
            try:
                if len(payload) < 65536:
                    self._write_all(header + payload)
                else:  # spare a copy of big payloads
                    self._write_all(header)
                    self._write_all(payload)
                while self._dropped:  # collected while we wrote: close them now
                    self._write_all(HEADER.pack(CLOSE, self._dropped.pop(), 0))
            except OSError:
                # The local side is gone; nobody is left to tell.
                _exit(0)
            finally:
                self._writer = 0

    def close_dropped(self, ident: int) -> None:
        """Send the close of a channel that was garbage-collected (from its
        ``__del__``, which may run in any thread at any point: inside our own
        write_frame it only queues, so frames never interleave)."""
        if self._writer == threading.get_ident():
            self._dropped.append(ident)
        else:
            self.write_frame(CLOSE, ident)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.wfd, view) :]

    # -- channel table

    def channel_for_value(self, ident: int) -> Channel:
        """The channel a received value names. One of our own (even) ids that
        is no longer in the table was closed and forgotten: it stays closed."""
        with self._lock:
            channel = self._channels.get(ident)
            if channel is not None:
                return channel
            channel = Channel(self, ident)
            if ident & 1:
                self._channels[ident] = channel
                return channel
        channel._closed = channel._remote_closed = channel._input_ended = True
        return channel

    def channel_for_id(self, ident: int) -> Channel:
        with self._lock:
            channel = self._channels.get(ident)
            if channel is None:
                channel = self._channels[ident] = Channel(self, ident)
            return channel

    def new_channel(self) -> Channel:
        with self._lock:
            ident = self._next_id
            self._next_id += 2
        return self.channel_for_id(ident)

    def id_of_channel(self, obj: object) -> int | None:
        if isinstance(obj, Channel):
            return obj.id
        if isinstance(obj, AsyncChannel):
            return obj.id
        return None

    def hold(self, channel: Channel) -> None:
        with self._lock:
            self._held[channel.id] = channel

    def forget_if_done(self, channel: Channel) -> None:
        if channel._closed and channel._remote_closed:
            with self._lock:
                if self._channels.get(channel.id) is channel:
                    del self._channels[channel.id]
                if self._held.get(channel.id) is channel:
                    del self._held[channel.id]

    # -- input

    def read_loop(self) -> None:
        decoder = FrameDecoder(self.max_frame)
        rfd = self.rfd
        dispatch = self._dispatch
        while True:
            data = os.read(rfd, READ_SIZE)
            if not data:
                _exit(0)  # the local side is gone: leave no orphan behind
            try:
                frames = decoder.feed(data)
            except ProtocolError as exc:
                sys.stderr.write("asyncgw worker: %s; exiting\n" % exc)
                _exit(3)
            for msgtype, ident, payload in frames:
                dispatch(msgtype, ident, payload)

    def _dispatch(self, msgtype: int, ident: int, payload: bytes) -> None:
        if msgtype == DATA:
            channel = self._channels.get(ident)
            if channel is None:
                if not ident & 1:  # one of ours, closed and forgotten: drop
                    return
                channel = self.channel_for_id(ident)
            channel._deliver(payload)
        elif msgtype == ACK:
            channel = self._channels.get(ident)
            if channel is not None:
                channel._on_ack(decode_ack(payload))
        elif msgtype in (CLOSE, CLOSE_ERROR):
            channel = self._channels.get(ident)
            if channel is not None:
                error = payload.decode("utf-8", "replace") if msgtype == CLOSE_ERROR else None
                channel._on_remote_close(error)
            elif ident & 1:  # the peer's channel, never used here: just answer
                self.write_frame(CLOSE, ident)
        elif msgtype == EXEC:
            self._start_exec(ident, payload)
        elif msgtype == REQUEST:
            self._answer(ident, payload.decode("ascii", "replace"))
        elif msgtype == TERMINATE:
            self._terminate(float(payload) if payload else None)

    def _answer(self, ident: int, what: str) -> None:
        if what == "status":
            with self._lock:
                answer: Any = {
                    "numchannels": len(self._channels),
                    "numexecuting": self._executing,
                    "execmodel": self.execmodel,
                }
        elif what == "info":
            answer = {
                "executable": sys.executable,
                "version_info": tuple(sys.version_info),
                "platform": sys.platform,
                "cwd": os.getcwd(),
                "pid": os.getpid(),
            }
        else:
            self.write_frame(CLOSE_ERROR, ident, ("unknown request %r" % what).encode())
            return
        self.write_frame(DATA, ident, dumps(answer))
        self.write_frame(CLOSE, ident)

    # -- execution

    def _start_exec(self, ident: int, payload: bytes) -> None:
        channel = self.channel_for_id(ident)
        source = filename = None
        try:
            request = loads(payload)
            source, funcname, kwargs, is_async = request[:4]
            code, filename = self._compile(source, request[4] if len(request) > 4 else None)
        except BaseException:
            channel._send_close(_format_exception(filename, source))
            return
        if not funcname:
            is_async = bool(code.co_flags & CO_COROUTINE)
        with self._lock:
            if self._terminating:
                refused = True
            else:
                refused = False
                self._executing += 1
        if refused:
            channel._send_close("the gateway is terminating and accepts no new code")
            return
        # Held until closed both ways: async code waiting on it is otherwise
        # reachable only through the channel itself (a cycle the collector
        # would take, closing the channel under the running code).
        self.hold(channel)
        if is_async:
            self._run_async(channel, code, source, funcname, kwargs)
        elif self.execmodel == "main_thread_only":
            self._schedule_on_main(channel, (channel, code, source, funcname, kwargs))
        else:
            self._threads.run(self._run_sync, (channel, code, source, funcname, kwargs))

    def _compile(self, source: str, filename: str | None = None) -> tuple[Any, str]:
        """Compile remote code, reusing the result for source seen before
        (``call`` sends the same source every time). ``filename``: the
        module's own, for tracebacks (its lines come from ``source``)."""
        filename = filename or "<remote exec %08x>" % (hash(source) & 0xFFFFFFFF)
        code = self._compiled.get((source, filename))
        if code is None:
            code = compile(source, filename, "exec", PYCF_ALLOW_TOP_LEVEL_AWAIT)
            if len(self._compiled) >= 64:
                self._compiled.clear()
            self._compiled[(source, filename)] = code
        return code, filename

    def _namespace(self, channel: object) -> dict[str, Any]:
        return {"channel": channel, "__name__": "__channelexec__", "__builtins__": builtins}

    def _run_sync(
        self, channel: Channel, code: Any, source: str, funcname: str | None, kwargs: Any
    ) -> None:
        error = None
        channel._executing = True
        try:
            namespace = self._namespace(channel)
            exec(code, namespace)
            if funcname:
                namespace[funcname](channel, **(kwargs or {}))
        except EOFError:
            pass  # as in execnet: code that ran out of input ended normally
        except BaseException:
            error = _format_exception(code.co_filename, source)
        self._finish(channel, error)

    def _finish(self, channel: Channel, error: str | None) -> None:
        channel._executing = False
        channel._send_close(error, override=True)
        with self._lock:
            self._executing -= 1
            self._idle.notify_all()

    def _event_loop(self) -> Any:
        if self._loop is None:
            import asyncio  # only now: it is expensive to import

            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="asyncgw-loop", daemon=True)
            thread.start()
            self._loop = loop
        return self._loop

    def _run_async(
        self, channel: Channel, code: Any, source: str, funcname: str | None, kwargs: Any
    ) -> None:
        import asyncio

        loop = self._event_loop()
        achannel = AsyncChannel(channel, loop)

        async def run() -> None:
            error = None
            channel._executing = True
            try:
                namespace = self._namespace(achannel)
                if funcname:
                    exec(code, namespace)
                    await namespace[funcname](achannel, **(kwargs or {}))
                else:
                    awaitable = eval(code, namespace)
                    if awaitable is not None:
                        await awaitable
            except BaseException:
                error = _format_exception(code.co_filename, source)
            self._finish(channel, error)

        # Tasks are referenced weakly by their loop: hold each until done.
        future = asyncio.run_coroutine_threadsafe(run(), loop)
        self._async_runs.add(future)
        future.add_done_callback(self._async_runs.discard)

    def _schedule_on_main(self, channel: Channel, args: tuple[Any, ...]) -> None:
        """Queue sync code for the main thread (``main_thread_only``). Code
        runs there one piece at a time; one that still finds the main thread
        busy after :data:`MAIN_THREAD_WAIT` seconds is refused with execnet's
        deadlock error, since the code before it may be waiting for it. The
        reader never waits here: a timer thread does, and only when busy."""
        job = (channel, args)
        with self._main_wake:
            self._main_jobs.append(job)
            self._main_wake.notify()
            busy = self._main_busy or len(self._main_jobs) > 1
        if busy:
            timer = threading.Timer(MAIN_THREAD_WAIT, self._refuse_if_waiting, (job,))
            timer.daemon = True
            timer.start()

    def _refuse_if_waiting(self, job: tuple[Channel, tuple[Any, ...]]) -> None:
        with self._main_wake:
            try:
                self._main_jobs.remove(job)
            except ValueError:
                return  # it got the main thread in time
        self._finish(job[0], MAIN_THREAD_ONLY_DEADLOCK_TEXT)

    def run_main_jobs(self) -> None:
        """The main thread's loop under the ``main_thread_only`` model."""
        while True:
            with self._main_wake:
                self._main_busy = False
                while not self._main_jobs:
                    self._main_wake.wait()
                _, args = self._main_jobs.popleft()
                self._main_busy = True
            self._run_sync(*args)

    # -- termination

    def _terminate(self, grace: float | None) -> None:
        """Refuse new code, end every channel's input, exit once code is done
        (or, with ``grace``, once that many seconds have passed)."""
        with self._lock:
            self._terminating = True
            channels = list(self._channels.values())
        for channel in channels:
            channel._end_input(None)
        thread = threading.Thread(
            target=self._exit_when_idle, args=(grace,), name="asyncgw-exit", daemon=True
        )
        thread.start()

    def _exit_when_idle(self, grace: float | None) -> None:
        with self._lock:
            if self._idle.wait_for(lambda: not self._executing, grace):
                _exit(0)
        # As execnet: interrupt the main thread's code, then leave anyway.
        import _thread

        _thread.interrupt_main()
        with self._lock:
            self._idle.wait_for(lambda: not self._executing, INTERRUPT_WAIT)
        _exit(1)


def _format_exception(filename: str | None = None, source: str | None = None) -> str:
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


def _exit(status: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # exiting anyway
            pass
    os._exit(status)


def _apply_config(config: dict[str, Any]) -> None:
    if config.get("dont_write_bytecode"):
        sys.dont_write_bytecode = True
    for name, value in (config.get("env") or {}).items():
        os.environ[name] = value
    chdir = config.get("chdir")
    if chdir:
        chdir = os.path.expanduser(chdir)
        os.makedirs(chdir, exist_ok=True)
        os.chdir(chdir)
    nice = config.get("nice")
    if nice:
        os.nice(int(nice))


def install_execnet_alias() -> None:
    """Make ``import execnet`` (and ``execnet.gateway_base``) in remote code
    give this worker's execnet API, so that code written for execnet — as
    pytest-xdist's worker side is — runs here with nothing installed:
    ``execnet.dumps`` to test that a value can travel, the error classes,
    the execmodels."""
    module = type(sys)("execnet")
    module.__doc__ = "execnet's remote-side names, answered by the asyncgw worker"
    names = {
        "Channel": Channel,
        "DataFormatError": DataFormatError,
        "DumpError": DumpError,
        "ExecModel": ExecModel,
        "LoadError": LoadError,
        "MAIN_THREAD_ONLY_DEADLOCK_TEXT": MAIN_THREAD_ONLY_DEADLOCK_TEXT,
        "RemoteError": RemoteError,
        "TimeoutError": builtins.TimeoutError,
        "dumps": dumps,
        "get_execmodel": get_execmodel,
        "loads": loads,
        "gateway_base": module,
    }
    for name, value in names.items():
        setattr(module, name, value)
    sys.modules["execnet"] = sys.modules["execnet.gateway_base"] = module
    # xdist hands its workers the caller's command line, where
    # `-p asyncgw.xdist` may stand: where asyncgw is not installed, that
    # import finds an empty plugin (last on the path: never a shadow).
    sys.meta_path.append(_StandInFinder())


class _StandInFinder:
    """Finds empty ``asyncgw`` and ``asyncgw.xdist`` modules, and nothing else."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in ("asyncgw", "asyncgw.xdist"):
            return None
        import importlib.machinery

        loader: Any = self
        return importlib.machinery.ModuleSpec(name, loader, is_package=name == "asyncgw")

    def create_module(self, spec: Any) -> None:
        return None  # the default module object

    def exec_module(self, module: Any) -> None:
        module.__doc__ = "stand-in: the caller's asyncgw plugin has nothing to do in a worker"


def main(config: dict[str, Any]) -> None:
    """Take over stdin/stdout as the protocol stream and serve until told to stop."""
    rfd = os.dup(0)
    wfd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    # What remote code prints goes to our stderr, which the caller sees;
    # for code run as execnet's (the caller aliased execnet), to /dev/null,
    # as execnet does: xdist's workers print their whole session there.
    os.dup2(devnull if config.get("execnet_alias") else 2, 1)
    os.close(devnull)
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    except AttributeError:  # replaced by something without reconfigure
        pass
    try:
        _apply_config(config)
    except BaseException:
        os.write(wfd, MAGIC)
        message = _format_exception().encode("utf-8", "replace")
        os.write(wfd, HEADER.pack(CLOSE_ERROR, 0, len(message)) + message)
        _exit(1)
    worker = Worker(rfd, wfd, config)
    if config.get("execnet_alias"):
        install_execnet_alias()
    hello = {
        "protocol": PROTOCOL_VERSION,
        "pid": os.getpid(),
        "executable": sys.executable,
        "version_info": tuple(sys.version_info[:3]),
    }
    os.write(wfd, MAGIC)
    worker.write_frame(HELLO, 0, dumps(hello))
    if worker.execmodel == "main_thread_only":
        reader = threading.Thread(target=worker.read_loop, name="asyncgw-reader", daemon=True)
        reader.start()
        worker.run_main_jobs()
    else:
        worker.read_loop()
