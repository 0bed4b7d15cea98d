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
import logging
import queue
import struct
import sys
import threading
import time
import traceback
import types
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

from . import __version__, _channel, _gateway, _group, _wire
from ._errors import (
    ChannelClosed,
    DataFormatError,
    DumpError,
    HostNotFound,
    LoadError,
    RemoteError,
    TimeoutError,
)
from ._loopthread import call_blocking as _run_sync
from ._loopthread import loop_thread, submit
from ._loopthread import run_blocking as _run
from ._spec import XSpec
from ._sync_rsync import RSync
from ._tasks import run_all
from .remote.channel import ChannelFileRead, ChannelFileWrite
from .remote.execmodel import ExecModel, get_execmodel

#: execnet 2.1's public names, exactly.
__all__ = [
    "Channel",
    "DataFormatError",
    "DumpError",
    "Gateway",
    "Group",
    "HostNotFound",
    "LoadError",
    "MultiChannel",
    "RSync",
    "RemoteError",
    "TimeoutError",
    "XSpec",
    "__version__",
    "default_group",
    "dump",
    "dumps",
    "load",
    "loads",
    "makegateway",
    "set_execmodel",
]

T = TypeVar("T")
log = logging.getLogger("asyncgw")
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
        return self._channel.isclosed()

    def _getremoteerror(self) -> Exception | None:
        """The error the channel ended with (execnet's name), if any."""
        return self._channel._error

    def setcallback(
        self, callback: Callable[[Any], object], endmarker: object = NO_ENDMARKER
    ) -> None:
        """Call ``callback(value)`` for each value, on the facade's callback
        thread (so it may block); ``callback(endmarker)`` at the end."""
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


# ------------------------------------------------------------------ gateways


_gateway_facades: weakref.WeakKeyDictionary[_gateway.Gateway, Gateway] = weakref.WeakKeyDictionary()


def _gateway_facade(gateway: _gateway.Gateway) -> Gateway:
    """The one facade of a core gateway (so that ``group[0] == group['gw0']``)."""
    with _facades_lock:
        facade = _gateway_facades.get(gateway)
    return facade if facade is not None else Gateway(gateway)


class Gateway:
    """A gateway with execnet's blocking API."""

    def __init__(self, gateway: _gateway.Gateway, group: Group | None = None) -> None:
        self._gateway = gateway
        with _facades_lock:
            _gateway_facades[gateway] = self
        # Channels inside received values arrive as facades.
        gateway._router.present_channel = _present
        self.id = gateway.id
        self.spec = gateway.spec
        self._group = group
        self._cache_rinfo: types.SimpleNamespace | None = None

    @property
    def execmodel(self) -> ExecModel:
        """This side's execution model (the group's)."""
        return self._group.execmodel if self._group is not None else get_execmodel("thread")

    @property
    def remote_execmodel(self) -> ExecModel:
        """The worker's execution model, as its spec chose."""
        return get_execmodel(self.spec.execmodel or "thread")

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
        """execnet's cached remote info: asked once (answered by the
        worker's reader, so it works while the main thread runs code)."""
        if self._cache_rinfo is None or update:
            self._cache_rinfo = self.remote_info()
        return self._cache_rinfo

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return _run(self._gateway.call, function, *args, **kwargs)

    @property
    def remoteaddress(self) -> str | None:
        """The address the gateway reached: its ssh or socket target."""
        for key in ("ssh", "socket"):
            value = getattr(self.spec, key)
            if isinstance(value, str):
                return value
        return None

    def remote_init_threads(self, num: int | None = None) -> None:
        """Deprecated in execnet, where it does nothing: so here."""
        warnings.warn(
            "remote_init_threads() is deprecated and does nothing (as in execnet)",
            DeprecationWarning,
            stacklevel=2,
        )

    def hasreceiver(self) -> bool:
        return self._gateway.is_alive

    def exit(self, timeout: float | None = None) -> None:
        """Ask the worker to exit and leave the group, without waiting (as
        execnet); code still running after :data:`EXIT_GRACE` seconds is
        interrupted and the worker exits. :meth:`join` waits for it.

        With ``timeout``, block instead until it has exited, killing it
        after ``timeout`` seconds.
        """
        if timeout is None:
            _run_sync(self._gateway.request_exit, EXIT_GRACE)
        else:
            _run(self._gateway.exit, timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the connection has ended."""
        _run(_wait_for, self._gateway.wait_closed, timeout)


async def _wait_for(function: Callable[[], Any], timeout: float | None) -> None:
    async with asyncio.timeout(timeout):
        await function()


#: Seconds a worker told to exit by :meth:`Gateway.exit` lets its running
#: code go on before interrupting it (execnet's figure).
EXIT_GRACE = 5.0

_live_groups: weakref.WeakSet[Group] = weakref.WeakSet()
#: Seconds groups left open at interpreter exit get before being killed.
EXIT_TIMEOUT = 1.0


async def _terminate_live_groups() -> None:
    await run_all(group._group.terminate(EXIT_TIMEOUT) for group in list(_live_groups))


class Group:
    """Gateways managed together, execnet style: ``Group(["popen"] * 2)``
    starts both members (in parallel) before returning."""

    def __init__(self, xspecs: Iterable[XSpec | str] = (), execmodel: str = "thread") -> None:
        self._group = _group.Group()
        self._prestarted: dict[str, Gateway] = {}
        self.set_execmodel(execmodel)
        with _live_lock:
            if not _live_groups and _terminate_live_groups not in loop_thread.shutdown_hooks:
                loop_thread.shutdown_hooks.append(_terminate_live_groups)
            _live_groups.add(self)
        specs = list(xspecs)
        if specs:
            self.makegateways(specs)

    @property
    def execmodel(self) -> ExecModel:
        """The local execution model (threads either way here)."""
        return self._execmodel

    @property
    def remote_execmodel(self) -> ExecModel:
        """The execmodel of members whose spec names none."""
        return self._remote_execmodel

    def set_execmodel(self, execmodel: str, remote_execmodel: str | None = None) -> None:
        """Choose the execution models, before any member exists:
        ``thread`` or ``main_thread_only`` (remote code on the worker's main
        thread); ``remote_execmodel`` defaults to ``execmodel``.

        :raises ValueError: for another model, or once the group has members.
        """
        if len(self._group):
            raise ValueError("can not set execution models if gateways have been created already")
        self._execmodel = get_execmodel(execmodel)
        self._remote_execmodel = get_execmodel(remote_execmodel or execmodel)

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

    def _with_execmodel(self, spec: XSpec | str | None) -> XSpec:
        """``spec`` parsed, naming the group's remote execmodel if it names
        none (execnet sets it on the caller's XSpec too)."""
        spec = XSpec(spec or self.defaultspec) if not isinstance(spec, XSpec) else spec
        if spec.execmodel is None:
            spec.execmodel = self._remote_execmodel.backend
        return spec

    def _sync_options(self) -> None:
        # Remote code finds execnet where ours is execnet (pytest-xdist's
        # worker side imports it): see asyncgw._execnet_compat.
        self._group.execnet_alias = sys.modules.get("execnet") is sys.modules[__name__]

    def makegateway(self, spec: XSpec | str | None = None) -> Gateway:
        """Start a member for ``spec`` (default: :attr:`defaultspec`).

        :raises SpecError: (a ``ValueError``) for a spec no gateway is made from.
        :raises HostNotFound: if the interpreter or host cannot be reached.
        """
        spec = self._with_execmodel(spec)
        started = self._prestarted.pop(spec.id, None) if spec.id is not None else None
        if started is not None and started._gateway.is_alive:
            return started
        self._sync_options()
        return Gateway(_run(self._group.makegateway, spec), self)

    def _prestart(self, specs: list[XSpec]) -> None:
        """Start the members of ``specs`` (which have ids) in parallel now,
        for callers that will ask for them one by one (pytest-xdist): a later
        ``makegateway`` of one of these specs returns its gateway. If any
        fails to start, none is kept, and ``makegateway`` reports its error."""
        specs = [self._with_execmodel(spec) for spec in specs]
        if any(spec.id is None for spec in specs):
            return
        try:
            gateways = self.makegateways(specs)
        except Exception as exc:  # each makegateway will tell its own error
            log.debug("starting %d gateways at once failed (%s)", len(specs), exc)
            return
        self._prestarted.update((gateway.id, gateway) for gateway in gateways)

    def makegateways(self, specs: Iterable[XSpec | str]) -> list[Gateway]:
        """Start members for all ``specs`` in parallel; all or nothing."""
        specs = [self._with_execmodel(spec) for spec in specs]
        self._sync_options()
        return [Gateway(gateway, self) for gateway in _run(self._group.makegateways, specs)]

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


def set_execmodel(execmodel: str, remote_execmodel: str | None = None) -> None:
    """Set the execution models of :data:`default_group` (see
    :meth:`Group.set_execmodel`)."""
    default_group.set_execmodel(execmodel, remote_execmodel)


def __getattr__(name: str) -> Any:
    # execnet's submodules (execnet.gateway_base, ...), for code that reaches
    # them through the package once `execnet` is this module.
    from ._execnet_compat import SUBMODULES, submodule

    if name in SUBMODULES:
        return submodule(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
