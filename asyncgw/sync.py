"""The blocking facade: execnet's API over the async core.

``import asyncgw.sync as execnet`` runs execnet-style code unchanged::

    group = execnet.Group(["popen"] * 2)          # members start in parallel
    channel = group[0].remote_exec("channel.send(channel.receive() + 1)")
    channel.send(1)
    assert channel.receive() == 2
    group.terminate(timeout=1.0)

Every method runs the async implementation on one event-loop thread per
process (:mod:`asyncgw._loopthread`); nothing here decides anything the
core does not. Two hand-offs are cheaper than a portal round trip because
they are hot: ``send`` encodes in the caller's thread and queues the bytes
for a per-channel task on the loop (blocking only when that queue or the
remote window is full), and ``receive`` waits on the core's coroutine
through ``run_coroutine_threadsafe``. Callbacks run on a thread of their
own, so they may block and use this API.

Works the same from scripts, REPLs, threads and Jupyter kernels (whose
main thread runs a loop of its own: we never block *our* loop's thread).
"""

from __future__ import annotations

import asyncio
import functools
import queue
import struct
import threading
import types
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

from . import _channel, _gateway, _group, _wire
from ._errors import (
    ChannelClosed,
    DataFormatError,
    DumpError,
    GatewayError,
    HostNotFound,
    LoadError,
    RemoteError,
    TimeoutError,
)
from ._loopthread import call_blocking as _run_sync
from ._loopthread import loop_thread, submit
from ._loopthread import run_blocking as _run
from ._spec import XSpec
from ._tasks import run_all

__all__ = [
    "NO_ENDMARKER",
    "Channel",
    "DataFormatError",
    "DumpError",
    "Gateway",
    "GatewayError",
    "Group",
    "HostNotFound",
    "LoadError",
    "MultiChannel",
    "RemoteError",
    "TimeoutError",
    "XSpec",
    "default_group",
    "dump",
    "dumps",
    "load",
    "loads",
    "makegateway",
]

T = TypeVar("T")
NO_ENDMARKER = _channel.NO_ENDMARKER

#: Bytes a channel's senders may queue ahead of the loop before blocking.
OUTBOX_LIMIT = 1024 * 1024


# ------------------------------------------------------------------ channels

_facades: weakref.WeakKeyDictionary[_channel.Channel, Channel] = weakref.WeakKeyDictionary()
_facades_lock = threading.Lock()


def _present(channel: _channel.Channel) -> Channel:
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
        self._cond = threading.Condition()
        self._pending: deque[bytes] = deque()
        self._queued = 0  # bytes in _pending or being sent
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.Event | None = None

    def put(self, payload: bytes, timeout: float | None = None) -> None:
        """Queue ``payload``; block while the outbox is full, at most
        ``timeout`` seconds (then raise ``TimeoutError``, nothing queued)."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._queued < OUTBOX_LIMIT or self._error is not None, timeout
            ):
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
            self._cond.notify_all()
            if not pending:
                self._task = None
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
                    self._cond.notify_all()
                assert self._idle is not None
                self._idle.set()
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            with self._cond:
                self._queued -= sent
                self._cond.notify_all()

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

    @property
    def gateway(self) -> Gateway:
        return _gateway_facade(self._channel.gateway)

    def __repr__(self) -> str:
        return repr(self._channel)

    def send(self, item: object, timeout: float | None = None) -> None:
        """Send ``item``; blocks only while the remote window is full, at
        most ``timeout`` seconds (None: as long as it takes).

        :raises DumpError: at once, for a type the wire cannot carry.
        :raises ChannelClosed: (an ``OSError`` in execnet) if closed.
        :raises TimeoutError: if the window stayed full; nothing was sent.
        """
        self._outbox.put(self._channel.encode(item), timeout)

    def receive(self, timeout: float | None = None) -> Any:
        """The next value; blocks up to ``timeout`` seconds (None: forever).

        :raises EOFError: (:class:`ChannelClosed`) at the end of the stream.
        :raises RemoteError: if remote code raised.
        :raises TimeoutError: if nothing came in time.
        """
        return _run(self._receive, timeout)

    async def _receive(self, timeout: float | None) -> Any:
        return await self._channel.receive(timeout)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return self.receive()
        except ChannelClosed:
            raise StopIteration from None

    next = __next__

    def waitclose(self, timeout: float | None = None) -> None:
        """Block until the remote side closed the channel.

        :raises RemoteError: if remote code raised.
        """
        _run(self._channel.waitclose, timeout)

    def close(self, error: str | None = None) -> None:
        """Close both ways, after the values already sent."""
        _run(self._close, error)

    async def _close(self, error: str | None) -> None:
        await self._outbox.flushed()
        self._channel.close(error)

    def isclosed(self) -> bool:
        return self._channel.isclosed()

    def setcallback(
        self, callback: Callable[[Any], object], endmarker: object = NO_ENDMARKER
    ) -> None:
        """Call ``callback(value)`` for each value, on the facade's callback
        thread (so it may block); ``callback(endmarker)`` at the end."""
        forward = _callbacks.forwarder(callback)
        _run_sync(self._channel.setcallback, forward, endmarker)

    def makefile(self, mode: str = "w", proxyclose: bool = False) -> IO[Any]:
        """A file object over the channel: ``'w'`` sends what is written,
        ``'r'`` reads what arrives (bytes or str values)."""
        if mode == "w":
            return _ChannelFileWrite(self, proxyclose)  # type: ignore[return-value]
        if mode == "r":
            return _ChannelFileRead(self, proxyclose)  # type: ignore[return-value]
        raise ValueError(f"mode must be 'w' or 'r', not {mode!r}")


class _ChannelFileWrite:
    def __init__(self, channel: Channel, proxyclose: bool) -> None:
        self.channel = channel
        self._proxyclose = proxyclose

    def write(self, data: Any) -> int:
        self.channel.send(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._proxyclose:
            self.channel.close()

    @property
    def closed(self) -> bool:
        return self.channel.isclosed()


class _ChannelFileRead:
    def __init__(self, channel: Channel, proxyclose: bool) -> None:
        self.channel = channel
        self._proxyclose = proxyclose
        self._buffer: Any = None

    def _fill(self) -> bool:
        try:
            chunk = self.channel.receive()
        except ChannelClosed:
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
        newline = b"\n" if isinstance(self._buffer, bytes) else "\n"
        while self._buffer is None or newline not in self._buffer:
            if not self._fill():
                return self.read()
            newline = b"\n" if isinstance(self._buffer, bytes) else "\n"
        index = self._buffer.index(newline) + 1
        line, self._buffer = self._buffer[:index], self._buffer[index:]
        return line

    def close(self) -> None:
        if self._proxyclose:
            self.channel.close()


class _CallbackThread:
    """Runs channel callbacks off the loop, in arrival order."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[Any], object], Any]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def forwarder(self, callback: Callable[[Any], object]) -> Callable[[Any], None]:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="asyncgw-callbacks", daemon=True
                )
                self._thread.start()
        put = self._queue.put
        return lambda item: put((callback, _facade_value(item)))

    def _serve(self) -> None:
        while True:
            callback, item = self._queue.get()
            try:
                callback(item)
            except Exception:  # reported; the thread lives on for the others
                import traceback

                traceback.print_exc()


_callbacks = _CallbackThread()


def _facade_value(item: Any) -> Any:
    return _present(item) if isinstance(item, _channel.Channel) else item


class MultiChannel(_channel.ChannelList[Channel]):
    """Several channels used as one."""

    def send_each(self, item: object) -> None:
        for channel in self._channels:
            channel.send(item)

    def receive_each(self, withchannel: bool = False) -> list[Any]:
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
        for channel in self._channels:
            channel.waitclose(timeout)


def _put_pair(received: queue.Queue[Any], channel: Channel, item: Any) -> None:
    received.put((channel, item))


# ------------------------------------------------------------------ gateways


_gateway_facades: weakref.WeakKeyDictionary[_gateway.Gateway, Gateway] = weakref.WeakKeyDictionary()


def _gateway_facade(gateway: _gateway.Gateway) -> Gateway:
    """The one facade of a core gateway (so that ``group[0] == group['gw0']``)."""
    with _facades_lock:
        facade = _gateway_facades.get(gateway)
    return facade if facade is not None else Gateway(gateway)


class Gateway:
    """A gateway with execnet's blocking API."""

    def __init__(self, gateway: _gateway.Gateway) -> None:
        self._gateway = gateway
        with _facades_lock:
            _gateway_facades[gateway] = self
        # Channels inside received values arrive as facades.
        gateway._router.present_channel = _present
        self.id = gateway.id
        self.spec = gateway.spec
        self._info: types.SimpleNamespace | None = None

    def __repr__(self) -> str:
        return repr(self._gateway)

    def remote_exec(self, source: Any, **kwargs: Any) -> Channel:
        """Start ``source`` (text, module or function) remotely; its channel."""
        return _present(_run_sync(self._gateway.remote_exec, source, **kwargs))

    def newchannel(self) -> Channel:
        return _present(_run_sync(self._gateway.newchannel))

    def remote_status(self) -> types.SimpleNamespace:
        return _run(self._gateway.remote_status)  # type: ignore[no-any-return]

    def remote_info(self) -> types.SimpleNamespace:
        return _run(self._gateway.remote_info)  # type: ignore[no-any-return]

    def _rinfo(self, update: bool = False) -> types.SimpleNamespace:
        """execnet's cached remote info."""
        if self._info is None or update:
            self._info = self.remote_info()
        return self._info

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return _run(self._gateway.call, function, *args, **kwargs)

    def hasreceiver(self) -> bool:
        return self._gateway.is_alive

    def exit(self, timeout: float | None = None) -> None:
        """Ask the remote to exit; kill it after ``timeout`` seconds."""
        _run(self._gateway.exit, timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the connection has ended."""
        _run(_wait_for, self._gateway.wait_closed, timeout)


async def _wait_for(function: Callable[[], Any], timeout: float | None) -> None:
    async with asyncio.timeout(timeout):
        await function()


_live_groups: weakref.WeakSet[Group] = weakref.WeakSet()
#: Seconds groups left open at interpreter exit get before being killed.
EXIT_TIMEOUT = 1.0


async def _terminate_live_groups() -> None:
    await run_all(group._group.terminate(EXIT_TIMEOUT) for group in list(_live_groups))


class Group:
    """Gateways managed together, execnet style: ``Group(["popen"] * 2)``
    starts both members (in parallel) before returning."""

    def __init__(self, xspecs: Iterable[XSpec | str] = (), execmodel: str = "thread") -> None:
        if execmodel != "thread":
            raise ValueError(f"the local execmodel is 'thread', not {execmodel!r}")
        self._group = _group.Group()
        self.execmodel = execmodel
        with _live_lock:
            if not _live_groups and _terminate_live_groups not in loop_thread.shutdown_hooks:
                loop_thread.shutdown_hooks.append(_terminate_live_groups)
            _live_groups.add(self)
        specs = list(xspecs)
        if specs:
            self.makegateways(specs)

    @property
    def defaultspec(self) -> str:
        return self._group.defaultspec

    @defaultspec.setter
    def defaultspec(self, spec: str) -> None:
        self._group.defaultspec = spec

    def __repr__(self) -> str:
        return repr(self._group)

    def __len__(self) -> int:
        return len(self._group)

    def __iter__(self) -> Iterator[Gateway]:
        return iter([_gateway_facade(gw) for gw in self._group])

    def __contains__(self, key: object) -> bool:
        if isinstance(key, Gateway):
            key = key._gateway
        return key in self._group

    def __getitem__(self, key: int | str) -> Gateway:
        return _gateway_facade(self._group[key])

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate(self._group.exit_timeout)

    def allocate_id(self, spec: XSpec) -> None:
        self._group.allocate_id(spec)

    def makegateway(self, spec: XSpec | str | None = None) -> Gateway:
        return Gateway(_run(self._group.makegateway, spec))

    def makegateways(self, specs: Iterable[XSpec | str]) -> list[Gateway]:
        gateways = _run(self._group.makegateways, list(specs))
        return [Gateway(gateway) for gateway in gateways]

    def remote_exec(self, source: Any, **kwargs: Any) -> MultiChannel:
        return MultiChannel(gateway.remote_exec(source, **kwargs) for gateway in self)

    def terminate(self, timeout: float | None = None) -> None:
        """Exit all members in parallel; kill those still there after
        ``timeout`` seconds."""
        _run(self._group.terminate, timeout)


_live_lock = threading.Lock()

#: The group of the module-level :func:`makegateway`.
default_group = Group()


def makegateway(spec: XSpec | str | None = None) -> Gateway:
    """A gateway in :data:`default_group`."""
    return default_group.makegateway(spec)


# ------------------------------------------------------------------ serializer

dumps = _wire.dumps
loads = _wire.loads
_LENGTH = struct.Struct("!I")


def dump(file: IO[bytes], obj: object) -> None:
    """Write ``obj`` to a binary file, readable by :func:`load`."""
    data = _wire.dumps(obj)
    file.write(_LENGTH.pack(len(data)) + data)


def load(file: IO[bytes]) -> Any:
    """Read one value written by :func:`dump`.

    :raises EOFError: at the end of the file.
    :raises LoadError: for malformed data.
    """
    header = file.read(_LENGTH.size)
    if not header:
        raise EOFError("no more values in file")
    if len(header) < _LENGTH.size:
        raise LoadError("truncated value header")
    (size,) = _LENGTH.unpack(header)
    data = file.read(size)
    if len(data) < size:
        raise LoadError("truncated value")
    return _wire.loads(data)
