"""Remote objects used through proxies (pyacq's model, awaitable).

``proxy = await gateway.create("pkg.mod:Name", *args, **kwargs)`` (or a
self-contained class, shipped as source) makes an object in the remote
interpreter and returns a :class:`Proxy` to it::

    counter = await gw.create(Counter, start=10)
    await counter.add(5)                  # a method call: one round trip
    total = await counter.total           # an attribute read
    name = await counter.owner.name.upper()   # a chain: still one round trip
    async for item in counter.history():  # a remote generator, streamed
        ...
    await counter.close()                 # or: async with counter: ...

Attribute reads and calls on a proxy build a :class:`Chain`; awaiting it
sends the whole chain as one message. A result is a value when the wire
carries it (DESIGN §2 types), else a further proxy; a generator or async
generator is a :class:`RemoteIterator`, which fetches items in batches, one
batch ahead, so a stream of any length takes bounded memory. A remote
exception raises :class:`~asyncgw.RemoteError` with the remote type name
and traceback. Cancelling the awaiting task (``asyncio.timeout`` gives a
call its own timeout; there is no default) cancels the remote call where
it is ``async``; a sync method runs on a remote worker thread and runs to
its end. The remote object is released on :meth:`Proxy.close`, at the end
of ``async with``, when the proxy is collected (releases are batched into
one message per loop iteration), and when its gateway goes.

One proxy can be used from several tasks at once; the blocking facade's
proxies (:mod:`asyncgw.sync`) from several threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import textwrap
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any

from .._bootstrap import module_source
from .._channel import RETRY_READ
from .._errors import GatewayLost, RemoteError

if TYPE_CHECKING:
    from .._channel import Channel
    from .._gateway import Gateway
    from .._router import Router

__all__ = [
    "Chain",
    "Proxy",
    "RemoteIterator",
    "map_leaves",
    "object_service",
    "remote_object_count",
]

REF = "__asyncgw_ref__"
_END = object()
_PLAIN = frozenset({type(None), bool, int, float, str, bytes})
#: Items fetched per round trip when iterating a remote generator.
BATCH = 1000

_services: weakref.WeakKeyDictionary[Gateway, ObjectService] = weakref.WeakKeyDictionary()


def object_service(gateway: Gateway) -> ObjectService:
    """The gateway's object service (started on first use)."""
    service = _services.get(gateway)
    if service is None or service.dead:
        service = _services[gateway] = ObjectService(gateway)
    return service


async def remote_object_count(gateway: Gateway) -> int:
    """How many objects the gateway's remote table holds (for tests and
    leak hunting); pending releases are sent first."""
    service = object_service(gateway)
    oids, service._releases = service._releases, []
    if oids:
        await service.request("release", oids)  # answered: released before the count
    count: int = await service.request("count", None)
    return count


class ObjectService:
    """The local end of one gateway's object service."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        source = module_source("remote/objects") + "\nserve(channel)\n"
        self.channel: Channel = gateway.remote_exec(source)
        self._ids = itertools.count(1)
        # Awaited by tasks (asyncio futures) or by threads of the blocking
        # facade (_Waiter); settled alike, on the loop.
        self._pending: dict[int, asyncio.Future[Any] | _Waiter] = {}
        self._releases: list[int] = []
        self._loop = asyncio.get_running_loop()
        # A gateway lost: its router ends the channel; calls fail at once.
        gateway.on_death(lambda death: self._end(GatewayLost(f"{gateway.id}: {death.cause}")))
        self.dead: BaseException | None = None
        # Replies settle their futures straight from the channel, on the
        # loop: no reader task between the frame and the waiting call.
        self.channel.setcallback(self._reply, endmarker=_END)
        # A blocking call's thread reading the pipe settles its own reply.
        self.channel.thread_taker = self._reply_in_thread

    def _reply_in_thread(self, message: Any) -> bool:
        """From a thread reading the pipe for the loop: settle a plain
        value's reply to a blocking call there and then (True). Any other
        reply is the loop's (False): references become proxies there."""
        if type(message) is not tuple or len(message) != 2:
            return False
        waiter = self._pending.get(message[0])
        if type(waiter) is not _Waiter:
            return False
        self._pending.pop(message[0], None)
        waiter.set_result(message[1])
        return True

    def _reply(self, message: Any) -> None:
        """Settle the request a reply answers (see the far side's module,
        :mod:`asyncgw.remote.objects`, for the shapes): its value, a new
        proxy or iterator, or its error. A reply of no known shape raises,
        which ends the service (the channel's callback failed)."""
        if message is _END:
            # The gateway going ends the channel with GatewayLost; the service
            # failing (it should not) closes it with its traceback: say which.
            error = self.channel._error
            if not isinstance(error, RemoteError):
                error = GatewayLost(f"the object service of {self.gateway.id} ended")
            self._end(error)
            return
        size = len(message) if type(message) is tuple else 0
        if size == 2:
            rid, result = message
        elif size == 4:
            rid, kind, oid, typename = message
            if type(oid) is not int or type(typename) is not str:
                raise ValueError(f"malformed reference in a reply: {message!r:.200}")
            if kind == "r":
                result = Proxy(self, oid, typename)
            elif kind == "i":
                result = RemoteIterator(self, oid, typename)
            else:
                raise ValueError(f"unknown reference kind in a reply: {kind!r:.50}")
        elif size == 5 and message[1] == "err":
            rid, _, name, text, formatted = message
            name = name if type(name) is str else repr(name)
            result = RemoteError(formatted or f"{name}: {text}", name)
        else:
            raise ValueError(f"malformed reply from the object service: {message!r:.200}")
        # (A reference whose call is no longer awaited is collected at once:
        # its proxy's finalizer releases the remote object.)
        future = self._pending.pop(rid, None)
        if future is None or future.done():
            return
        if size == 5:
            future.set_exception(result)
        else:
            future.set_result(result)

    def _end(self, error: BaseException) -> None:
        self.dead = error
        for future in list(self._pending.values()):
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    def request(self, op: str | int, *payload: Any) -> Awaitable[Any]:
        """Send a request, ``(rid, op, *payload)``, and await its result (a
        value, or a proxy or iterator for a reference). Cancelling sends a
        cancel for it (which stops it remotely where it is async)."""
        return _Awaiting(self.requesting(op, *payload))

    def requesting(self, op: str | int, *payload: Any) -> Generator[Any, None, Any]:
        """:meth:`request` as the generator an ``__await__`` returns: a
        chain's call is then one frame between the awaiting task and the
        reply's future (an ``async def`` adds its own, and a wrapper)."""
        if self.dead is not None:
            raise self.dead
        rid = next(self._ids)
        future = self._loop.create_future()
        self._pending[rid] = future
        channel = self.channel
        encoded = channel.encode((rid, op, *payload))
        # Queued at once when the window has room (the common case), as the
        # pool's links do; else sent when it has.
        if not channel.send_encoded_nowait(encoded):
            yield from channel.send_encoded(encoded).__await__()
        # About to wait for the reply: write the request now rather than one
        # loop iteration later (as a channel's receive does).
        channel.flush()
        try:
            return (yield from future)
        except asyncio.CancelledError:
            self._pending.pop(rid, None)
            if self.dead is None:
                self._loop.create_task(self._send_quietly((0, "cancel", rid)))
            raise

    def request_blocking(self, op: str | int, *payload: Any) -> Any:
        """:meth:`request` for a thread other than the loop's (the blocking
        facade): the request is written from this thread when the router
        can, and the reply wakes this thread straight from the channel's
        callback, with no task and no hop through the loop for the call.
        An interrupted wait sends a cancel, as a cancelled request does."""
        if asyncio._get_running_loop() is self._loop:
            raise RuntimeError("a blocking remote call cannot run on its own event loop")
        rid = next(self._ids)
        waiter = _Waiter()
        self._pending[rid] = waiter
        sent = False
        try:
            if self.dead is not None:  # _end sets it before settling what is pending
                raise self.dead
            encoded = self.channel.encode((rid, op, *payload))
            if not self.channel.send_from_thread(encoded):
                coroutine = self.channel.send_encoded(encoded)
                asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()
            sent = True
            return waiter.result(self.channel._router)
        except BaseException:
            self._pending.pop(rid, None)
            if sent and not waiter.done() and self.dead is None:
                cancel = self._send_quietly((0, "cancel", rid))
                asyncio.run_coroutine_threadsafe(cancel, self._loop)
            raise

    async def _send_quietly(self, message: Any) -> None:
        with contextlib.suppress(Exception):  # the gateway is gone, and its objects with it
            await self.channel.send(message)

    def release_later(self, oid: int) -> None:
        """Release ``oid`` with the next batch (callable from any thread,
        and from finalizers)."""
        if self.dead is not None or self._loop.is_closed():
            return
        self._releases.append(oid)
        if len(self._releases) == 1:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(self.flush_releases)

    def flush_releases(self) -> None:
        oids, self._releases = self._releases, []
        if oids and self.dead is None:
            self._loop.create_task(self._send_quietly((0, "release", oids)))

    def wrap(self, result: Any) -> Any:
        """An item of a remote iterator's batch, ``("v", value)`` or a
        reference, as a value, a proxy or a remote iterator."""
        kind = result[0]
        if kind == "v":
            return result[1]
        if type(result[1]) is not int or type(result[2]) is not str:
            raise ValueError(f"malformed reference in a batch: {result!r:.200}")
        if kind == "i":
            return RemoteIterator(self, result[1], result[2])
        if kind == "r":
            return Proxy(self, result[1], result[2])
        raise ValueError(f"unknown reference kind in a batch: {kind!r:.50}")


class _Awaiting:
    """An awaitable over a generator that waits (:meth:`ObjectService.requesting`)."""

    __slots__ = ("_steps",)

    def __init__(self, steps: Generator[Any, None, Any]) -> None:
        self._steps = steps

    def __await__(self) -> Generator[Any, None, Any]:
        return self._steps


class _Waiter:
    """The reply a thread of the blocking facade waits for: settled once,
    on the loop; the waiting thread blocks on a lock that settling
    releases, the cheapest hand-off between two threads (a
    ``concurrent.futures.Future`` makes a condition and its lock per call,
    and notifies through it)."""

    __slots__ = ("_done", "_error", "_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # released once settled
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def set_result(self, value: Any) -> None:
        if not self._done:
            self._value, self._done = value, True
            self._lock.release()

    def set_exception(self, error: BaseException) -> None:
        if not self._done:
            self._error, self._done = error, True
            self._lock.release()

    def result(self, router: Router | None = None) -> Any:
        """Block until settled; the value, or raise the error. A signal
        (KeyboardInterrupt) interrupts the wait. Given the ``router`` the
        reply comes through, read its pipe meanwhile where this thread can
        (``Router.read_for_thread``): the reply then wakes no other thread."""
        lock = self._lock
        while router is not None and not self._done:
            read = router.read_for_thread(None, self.done)
            if read is None:
                break
            if read is False and lock.acquire(timeout=RETRY_READ):
                lock.release()
                break
        lock.acquire()
        lock.release()  # settled: later calls return at once
        if self._error is not None:
            raise self._error
        return self._value


def map_leaves(value: Any, convert: Callable[[Any], Any]) -> Any:
    """``value`` with ``convert`` applied to what its tuples, lists and dicts
    hold (their keys and plain values excepted): how proxies in arguments
    become references, here and in the blocking facade."""
    if type(value) in _PLAIN:
        return value
    if type(value) is tuple:
        # A call's arguments are mostly plain: then the tuple is its own
        # image (immutable), with no generator and no copy (about 1 us a call).
        for item in value:
            if type(item) not in _PLAIN:
                return tuple(map_leaves(item, convert) for item in value)
        return value
    if type(value) is list:
        return [map_leaves(item, convert) for item in value]
    if type(value) is dict:
        if not value:
            return value  # a call's empty **kwargs, the common case
        return {key: map_leaves(item, convert) for key, item in value.items()}
    return convert(value)


def _reference(value: Any) -> Any:
    if isinstance(value, Proxy):
        return (REF, value._live_oid())
    return value


def _encode(value: Any) -> Any:
    """Arguments with proxies replaced by references."""
    return map_leaves(value, _reference)


class Chain:
    """Attribute reads, item reads and calls from a remote object, sent as
    one message when awaited (or iterated)."""

    __slots__ = ("_path", "_proxy")

    def __init__(self, proxy: Proxy, path: tuple[tuple[Any, ...], ...]) -> None:
        self._proxy = proxy
        self._path = path

    def __getattr__(self, name: str) -> Chain:
        if name.startswith("__"):
            raise AttributeError(name)
        return Chain(self._proxy, (*self._path, ("getattr", name)))

    def __getitem__(self, key: Any) -> Chain:
        return Chain(self._proxy, (*self._path, ("getitem", _encode(key))))

    def __call__(self, *args: Any, **kwargs: Any) -> Chain:
        for arg in args:
            if type(arg) not in _PLAIN:
                args = _encode(args)
                break
        return Chain(self._proxy, (*self._path, ("call", args, _encode(kwargs) if kwargs else {})))

    def _message(self) -> tuple[Any, ...]:
        """The request that evaluates this chain, without its id."""
        path = self._path
        if len(path) == 2 and path[0][0] == "getattr" and path[1][0] == "call":
            # The common case, a method call, in a flat message.
            _, name = path[0]
            _, args, kwargs = path[1]
            oid = self._proxy._live_oid()
            if kwargs:
                return "call", (oid, name, args, kwargs)
            return (oid, name, *args)
        return "eval", (self._proxy._live_oid(), [list(step) for step in path])

    def _evaluate(self) -> Generator[Any, None, Any]:
        return self._proxy._service.requesting(*self._message())

    def _evaluate_blocking(self) -> Any:
        """Evaluate from a thread other than the loop's, blocking."""
        return self._proxy._service.request_blocking(*self._message())

    def __await__(self) -> Generator[Any, None, Any]:
        return self._evaluate()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        iterator = await self
        if not isinstance(iterator, RemoteIterator):
            raise TypeError(f"{self!r} is not a remote generator")
        async with iterator:
            async for item in iterator:
                yield item

    def __repr__(self) -> str:
        text = "".join(
            f".{step[1]}" if step[0] == "getattr" else "[...]" if step[0] == "getitem" else "(...)"
            for step in self._path
        )
        return f"<Chain {self._proxy!r}{text}>"


class _Method(Chain):
    """``proxy.name``, the chain a method call starts from: called without
    keywords, it makes a :class:`_Call`."""

    __slots__ = ("_name",)

    def __init__(self, proxy: Proxy, name: str) -> None:
        self._proxy = proxy
        self._name = name
        self._path = (("getattr", name),)

    def __call__(self, *args: Any, **kwargs: Any) -> Chain:
        if kwargs:
            return Chain.__call__(self, *args, **kwargs)
        for arg in args:
            if type(arg) not in _PLAIN:
                args = _encode(args)
                break
        return _Call(self._proxy, self._name, args)


class _Call(Chain):
    """``proxy.name(*args)``, the common chain: its request is flat,
    ``(oid, name, *args)``, made with no path to read."""

    __slots__ = ("_args", "_name")

    def __init__(self, proxy: Proxy, name: str, args: tuple[Any, ...]) -> None:
        self._proxy = proxy
        self._name = name
        self._args = args

    @property
    def _path(self) -> tuple[tuple[Any, ...], ...]:  # type: ignore[override]
        """As a chain (for a chain that goes on from the call, or repr)."""
        return (("getattr", self._name), ("call", self._args, {}))

    def _message(self) -> tuple[Any, ...]:
        return (self._proxy._live_oid(), self._name, *self._args)

    def __await__(self) -> Generator[Any, None, Any]:
        proxy = self._proxy
        return proxy._service.requesting(proxy._live_oid(), self._name, *self._args)


class Proxy:
    """A remote object (see the module docstring)."""

    __slots__ = ("__weakref__", "_closed", "_finalizer", "_oid", "_service", "_typename")

    def __init__(self, service: ObjectService, oid: int, typename: str) -> None:
        self._service = service
        self._oid = oid
        self._typename = typename
        # The finalizer runs at collection (or exit); a proxy in use is not
        # collected, so only close() ends it early, and says so here.
        self._closed = False
        self._finalizer = weakref.finalize(self, service.release_later, oid)

    def __getattr__(self, name: str) -> Chain:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Method(self, name)

    def __getitem__(self, key: Any) -> Chain:
        return Chain(self, (("getitem", _encode(key)),))

    def __call__(self, *args: Any, **kwargs: Any) -> Chain:
        return Chain(self, (("call", _encode(args), _encode(kwargs)),))

    def __repr__(self) -> str:
        return f"<Proxy {self._typename} #{self._oid} on {self._service.gateway.id}>"

    def _live_oid(self) -> int:
        """The remote object's id, for a request that uses it.

        :raises ReferenceError: once the proxy was closed (its object released).
        """
        if self._closed:
            raise ReferenceError(f"{self!r} was closed: its remote object is released")
        return self._oid

    async def close(self) -> None:
        """Release the remote object now. The proxy is unusable after: a
        call or read through it, or passing it as an argument, raises
        ``ReferenceError`` (a remote call that names a released object by
        other means raises a :class:`~asyncgw.RemoteError` of type
        ``ReferenceError``)."""
        self._closed = True
        if self._finalizer.detach() is not None and self._service.dead is None:
            await self._service._send_quietly((0, "release", [self._oid]))

    async def __aenter__(self) -> Proxy:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class RemoteIterator:
    """A remote generator or async generator, streamed in batches of
    :data:`BATCH` items with one batch fetched ahead."""

    def __init__(self, service: ObjectService, iid: int, typename: str) -> None:
        self._service = service
        self._iid = iid
        self._typename = typename
        self._buffer: list[Any] = []
        self._ahead: asyncio.Task[Any] | None = None
        self._done = False
        self._finalizer = weakref.finalize(self, service.release_later, iid)

    def __repr__(self) -> str:
        return f"<RemoteIterator {self._typename} #{self._iid} on {self._service.gateway.id}>"

    def __aiter__(self) -> RemoteIterator:
        return self

    async def _fetch(self) -> Any:
        return await self._service.request("next", (self._iid, BATCH))

    async def __anext__(self) -> Any:
        while not self._buffer:
            if self._done:
                raise StopAsyncIteration
            ahead, self._ahead = self._ahead, None
            plain, items, done = await (ahead if ahead is not None else self._fetch())
            self._done = done
            if done:
                self._finalizer.detach()  # the far side forgot it
            else:  # one batch ahead: back-pressure, and no wait between batches
                self._ahead = asyncio.ensure_future(self._fetch())
            self._buffer = items if plain else [self._service.wrap(item) for item in items]
            self._buffer.reverse()
        return self._buffer.pop()

    async def _next_batch(self) -> list[Any]:
        """The items buffered or of the next batch (empty at the end)."""
        try:
            first = await self.__anext__()
        except StopAsyncIteration:
            return []
        batch, self._buffer = [first, *reversed(self._buffer)], []
        return batch

    async def aclose(self) -> None:
        """Stop: close the remote generator (its ``finally`` runs there)."""
        if self._ahead is not None:
            self._ahead.cancel()
            self._ahead = None
        self._buffer = []
        if not self._done:
            self._done = True
            self._finalizer.detach()
            await self._service.request("close_iter", self._iid)

    async def __aenter__(self) -> RemoteIterator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def target_of(target: Any) -> tuple[str, ...]:
    """``("import", "pkg.mod:Name")`` or ``("source", text, name)``.

    :raises TypeError: for what is neither a class nor ``"module:Name"``.
    """
    if isinstance(target, str):
        if ":" not in target:
            raise ValueError(f"a remote class is 'package.module:Name', not {target!r}")
        return ("import", target)
    if inspect.isclass(target):
        try:
            lines, first = inspect.getsourcelines(target)
            filename = inspect.getsourcefile(target) or f"<class {target.__name__}>"
        except (OSError, TypeError) as exc:
            raise TypeError(f"cannot ship class {target.__name__}: {exc}") from None
        # At its own line numbers, under its own file name: remote tracebacks
        # then point at the caller's source.
        source = "\n" * (first - 1) + textwrap.dedent("".join(lines))
        return ("source", source, target.__name__, filename)
    raise TypeError(f"create() takes a class or 'module:Name', not {type(target).__name__}")


async def create(gateway: Gateway, target: Any, *args: Any, **kwargs: Any) -> Any:
    """See :meth:`asyncgw.Gateway.create`."""
    service = object_service(gateway)
    payload = (target_of(target), _encode(list(args)), _encode(kwargs))
    return await service.request("create", payload)
