"""The far side of remote objects (:mod:`asyncgw.objects.proxy`).

Shipped as source by ``gateway.remote_exec`` with ``serve(channel)``
appended, and run with the worker's blocking channel: stdlib only, Python
3.9 syntax. One such service per gateway holds the objects the caller uses
through proxies, in a table keyed by object id.

Requests, flat tuples (a message's cost on the wire grows with its
items, so the common call has the fewest):

- ``(rid, oid, name, arg, ...)``: a method call without keyword
  arguments, the common chain (told apart by an ``int`` in second place);
- ``(rid, op, payload)`` for every other request, ``op`` a string:

  - ``("create", (target, args, kwargs))``: ``target`` is ``("import",
    "pkg.mod:Name")`` or ``("source", text, name, filename)`` (the text
    padded to its line numbers in that file); the result is a reference;
  - ``("call", (oid, name, args[, kwargs]))``: a method call with keyword
    arguments;
  - ``("eval", (oid, path))``: from object ``oid``, apply each step of
    ``path`` — ``("getattr", name)``, ``("call", args, kwargs)``,
    ``("getitem", key)`` — in one go, awaiting what a step returns if it
    is awaitable;
  - ``("next", (iid, count))``: up to ``count`` items of iterator ``iid``:
    ``(plain, items, exhausted)``, the items as values if ``plain``, else
    each ``("v", value)`` or a reference as below; an exhausted iterator
    is forgotten;
  - ``("close_iter", iid)``: close and forget an iterator;
  - ``("release", [oid, ...])`` (answered only if ``rid`` is not 0) and
    ``("cancel", rid)`` (never answered);
  - ``("count", None)``: how many objects the table holds.

``rid`` 0 takes no reply. Replies, told apart by their length:

- ``(rid, value)``: the result, a value the wire carries (checked deeply);
- ``(rid, "r", oid, type name)``: a reference to anything else, or
  ``(rid, "i", iid, type name)`` to a generator or async generator
  (results of a call, ``create`` and ``eval``);
- ``(rid, "err", type name, message, traceback)``: the request failed.

Arguments may hold references as ``("__asyncgw_ref__", oid)``. Each
request is answered by the worker's reader itself, inline (see
:class:`Service`); coroutines run on the service's event loop, where a
``cancel`` cancels them.

Invariants, whatever the objects do: every request with a ``rid`` gets one
reply, and no failure of one request ends the service. A result the wire
cannot carry (over ``max_frame``, ...) is answered as that call's error; an
exception is described without trusting it (its ``str``, ``repr`` or
traceback formatting may raise, or be huge: each part falls back, and is
cut to fit the frame); a generator that raises first delivers the items it
yielded, and its error comes with the next batch; an unknown object id (a
released object) is a ``ReferenceError`` that says so.
"""

import asyncio
import concurrent.futures
import importlib
import inspect
import itertools
import linecache
import threading
import traceback
from typing import Any, Tuple

REF = "__asyncgw_ref__"
_END = object()  # the channel's endmarker: the caller closed the service
_PLAIN = (type(None), bool, int, float, complex, str, bytes)
_CONTAINERS = (list, tuple, dict, set, frozenset)
#: Of the frame's room, at most this share for each text of an error reply.
_TEXT_SHARE = 4


def _safe_text(make: Any, fallback: str) -> str:
    """``make()`` as an exact ``str``, or ``fallback`` if it raises (anything)."""
    try:
        text = make()
        if isinstance(text, str):
            return str.__str__(text)  # a str subclass could still misbehave
    except BaseException:
        pass
    return fallback


def _clip(text: str, limit: int) -> str:
    """``text`` with its middle cut out if its UTF-8 exceeds ``limit`` bytes."""
    if len(text) * 4 <= limit or len(text.encode("utf-8", "surrogatepass")) <= limit:
        return text
    marker = "\n[... cut to fit max_frame ...]\n"
    keep = max(0, (limit - len(marker)) // 8)  # up to 4 bytes a character, two ends
    return text[:keep] + marker + text[len(text) - keep :]


def describe(exc: BaseException, limit: int, note: str = "") -> Tuple[str, str, str]:
    """``(type name, message, traceback)`` of ``exc`` for an error reply,
    each part safe to make and to send: an exception's ``__str__``,
    ``__repr__``, its type's name or its traceback's formatting may raise
    or return anything; each text is cut to ``limit`` bytes."""
    name = _safe_text(lambda: type(exc).__name__, "BaseException")
    message = _safe_text(lambda: str(exc), "")
    if not message:
        message = _safe_text(lambda: repr(exc), "<%s: str() and repr() failed>" % name)
    formatted = _safe_text(
        lambda: "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), ""
    )
    if not formatted:
        formatted = "%s: %s\n" % (name, message)
    return (_clip(name, 200), _clip(note + message, limit), _clip(note + formatted, limit))


def _is_value(obj: Any, depth: int = 0) -> bool:
    """Whether the wire carries ``obj`` as it is (a value, not a reference)."""
    if isinstance(obj, _PLAIN):
        return type(obj) in _PLAIN or isinstance(obj, bool)
    if depth > 50 or type(obj) not in _CONTAINERS:
        return False
    if isinstance(obj, dict):
        return all(_is_value(k, depth + 1) and _is_value(v, depth + 1) for k, v in obj.items())
    return all(_is_value(item, depth + 1) for item in obj)


class Service:
    """Serves requests on the worker's reader thread, as they arrive
    (``channel._serve``): a quick call costs no thread switch. A request
    that runs long has the reading handed to another thread, so a slow
    call holds up no other, and requests may then run at once: what is
    shared here is either GIL-atomic (the table, the id counter) or
    locked. Coroutines run on one event loop thread of the service's own,
    started when needed."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.objects = {}  # type: dict[int, Any]
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        self.running = {}  # type: dict[int, Any]
        # Iterators that raised after yielding: their error, for the next request.
        self.failures = {}  # type: dict[int, BaseException]
        self.loop = None  # type: Any
        self.ended = threading.Event()

    def get(self, oid: Any) -> Any:
        """The object ``oid`` names.

        :raises ReferenceError: for an id the table does not hold (the
            object was released).
        """
        try:
            return self.objects[oid]
        except (KeyError, TypeError):
            raise ReferenceError(
                "no remote object #%r here: it was released (or never existed)" % (oid,)
            ) from None

    def keep(self, obj: Any) -> int:
        oid = next(self.ids)
        self.objects[oid] = obj
        return oid

    def result(self, obj: Any) -> Tuple[Any, ...]:
        """A result as an item of a batch: ``("v", value)`` or a reference."""
        if type(obj) in _PLAIN or _is_value(obj):
            return ("v", obj)
        return self.reference(obj)

    def reference(self, obj: Any) -> Tuple[Any, ...]:
        kind = "i" if inspect.isgenerator(obj) or inspect.isasyncgen(obj) else "r"
        return (kind, self.keep(obj), type(obj).__name__)

    def reply(self, rid: int, obj: Any) -> Tuple[Any, ...]:
        """The reply that carries a call's result: the value, or a reference."""
        if type(obj) in _PLAIN or _is_value(obj):
            return (rid, obj)
        return (rid, *self.reference(obj))

    def resolve(self, value: Any) -> Any:
        """Arguments with references replaced by their objects."""
        if type(value) in _PLAIN:
            return value
        if type(value) is tuple:
            if len(value) == 2 and value[0] == REF:
                return self.get(value[1])
            return tuple(self.resolve(item) for item in value)
        if type(value) is list:
            return [self.resolve(item) for item in value]
        if type(value) is dict:
            return {key: self.resolve(item) for key, item in value.items()}
        return value

    def handle(self, request: Any) -> None:
        """Answer one request (called for each, by the channel). The common
        one, ``(rid, oid, name, arg, ...)``, a method call, takes the
        shortest path: a plain result is sent as it is."""
        if type(request) is tuple and len(request) > 2 and type(request[1]) is int:
            rid = request[0]
            try:
                try:
                    obj = self.objects[request[1]]
                except KeyError:
                    obj = self.get(request[1])  # raises, naming the id
                args = request[3:]  # type: Any
                for arg in args:
                    if type(arg) not in _PLAIN:
                        args = [self.resolve(arg) for arg in args]
                        break
                result = getattr(obj, request[2])(*args)
                if type(result) in _PLAIN:
                    reply = (rid, result)  # type: Tuple[Any, ...]
                else:
                    if inspect.isawaitable(result):
                        result = self.wait(rid, result)
                    reply = self.reply(rid, result)
            except BaseException as exc:
                reply = self.error_reply(rid, exc)
            try:
                self.channel.send(reply)
            except BaseException as exc:
                self.reply_failed(rid, exc)
            return
        if type(request) is not tuple or len(request) != 3:
            if request is _END:
                self.ended.set()
            return  # not a request of ours: nobody to answer
        rid, op, payload = request
        if op == "release" and not rid:
            self.op_release(rid, payload)
        elif op == "cancel":
            future = self.running.get(payload)
            if future is not None:
                future.cancel()
        else:
            self.answer(rid, op, payload)

    def answer(self, rid: Any, op: Any, payload: Any) -> None:
        """Run one request and send its reply: its result, or its error."""
        try:
            reply = self.ops[op](self, rid, payload)  # type: ignore[attr-defined]
        except BaseException as exc:
            reply = self.error_reply(rid, exc)
        try:
            self.channel.send(reply)
        except BaseException as exc:
            self.reply_failed(rid, exc)

    def error_reply(self, rid: Any, exc: BaseException) -> Tuple[Any, ...]:
        if isinstance(exc, concurrent.futures.CancelledError):
            return (rid, "err", "CancelledError", "cancelled remotely", "")
        return (rid, "err", *describe(exc, self.channel._worker.max_frame // _TEXT_SHARE))

    def reply_failed(self, rid: Any, exc: BaseException) -> None:
        """A reply could not be sent (``exc``): unless the caller is gone,
        the reply could not be encoded (too big for max_frame, a value the
        wire refuses), which is this call's error, not a silence."""
        if self.channel.isclosed():
            return
        limit = self.channel._worker.max_frame // _TEXT_SHARE
        error = describe(exc, limit, "the reply could not be sent: ")
        try:
            self.channel.send((rid, "err", *error))
        except BaseException:
            pass  # the caller is gone

    def wait(self, rid: int, awaitable: Any) -> Any:
        """The result of a coroutine, run on the service's loop; a
        ``cancel`` for ``rid`` cancels it."""
        with self.lock:
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
                threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def run() -> Any:
            return await awaitable

        future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        self.running[rid] = future
        try:
            return future.result()
        finally:
            self.running.pop(rid, None)

    def call(self, rid: int, function: Any, args: Any, kwargs: Any) -> Any:
        args = [self.resolve(arg) for arg in args]
        kwargs = {key: self.resolve(value) for key, value in kwargs.items()} if kwargs else {}
        result = function(*args, **kwargs)
        if type(result) not in _PLAIN and inspect.isawaitable(result):
            result = self.wait(rid, result)
        return result

    def op_call(self, rid: int, payload: Any) -> Any:
        """``(oid, name, args[, kwargs])``: a method call, keywords and all."""
        function = getattr(self.get(payload[0]), payload[1])
        kwargs = payload[3] if len(payload) > 3 else None
        return self.reply(rid, self.call(rid, function, payload[2], kwargs))

    def op_create(self, rid: int, payload: Any) -> Any:
        target, args, kwargs = payload
        if target[0] == "import":
            module, _, name = target[1].partition(":")
            cls = importlib.import_module(module)
            for part in name.split("."):
                cls = getattr(cls, part)
        else:
            source, name, filename = target[1], target[2], target[3]
            # Tracebacks show the caller's lines: the source is known under
            # the caller's file name (linecache), at its own line numbers.
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            namespace = {"__name__": "__asyncgw_objects__"}  # type: dict[str, Any]
            exec(compile(source, filename, "exec"), namespace)
            cls = namespace[name]
        return self.reply(rid, self.call(rid, cls, args, kwargs))

    def op_eval(self, rid: int, payload: Any) -> Any:
        oid, path = payload
        obj = self.get(oid)
        for step in path:
            if step[0] == "getattr":
                obj = getattr(obj, step[1])
            elif step[0] == "call":
                obj = self.call(rid, obj, step[1], step[2])
            elif step[0] == "getitem":
                obj = obj[self.resolve(step[1])]
            else:
                raise ValueError("unknown step %r" % (step[0],))
        if inspect.isawaitable(obj) and not inspect.isasyncgen(obj):
            obj = self.wait(rid, obj)
        return self.reply(rid, obj)

    def op_next(self, rid: int, payload: Any) -> Any:
        """Up to ``count`` items. If the iterator raises after yielding
        some, those items are the reply and its error is kept for the next
        request: nothing it yielded is lost."""
        iid, count = payload
        iterator = self.get(iid)
        failure = self.failures.pop(iid, None)
        if failure is not None:
            self.objects.pop(iid, None)
            raise failure
        items = []  # type: list[Any]
        done = False
        try:
            if inspect.isasyncgen(iterator):

                async def take_async() -> bool:
                    for _ in range(count):
                        try:
                            items.append(await iterator.__anext__())
                        except StopAsyncIteration:
                            return True
                    return False

                done = self.wait(rid, take_async())
            else:
                items.extend(itertools.islice(iterator, count))
                done = len(items) < count
        except BaseException as exc:
            if not items or isinstance(exc, concurrent.futures.CancelledError):
                self.objects.pop(iid, None)
                raise
            self.failures[iid] = exc  # raised by the next request for iid
        if done:
            self.objects.pop(iid, None)
        if all(_is_value(item) for item in items):
            return (rid, (True, items, done))  # the common case: values, as they are
        return (rid, (False, [self.result(item) for item in items], done))

    def op_close_iter(self, rid: int, payload: Any) -> Any:
        iterator = self.objects.pop(payload, None)
        self.failures.pop(payload, None)
        if inspect.isasyncgen(iterator):
            self.wait(rid, iterator.aclose())
        elif inspect.isgenerator(iterator):
            iterator.close()
        return (rid, None)

    def op_release(self, rid: int, payload: Any) -> Any:
        for oid in payload:
            self.objects.pop(oid, None)
            self.failures.pop(oid, None)
        return (rid, None)

    def op_count(self, rid: int, payload: Any) -> Any:
        return (rid, len(self.objects))


Service.ops = {  # type: ignore[attr-defined]
    name[3:]: function for name, function in vars(Service).items() if name.startswith("op_")
}


def serve(channel: Any) -> None:
    """Serve requests until the caller closes the channel."""
    service = Service(channel)
    channel._serve(service.handle, _END)
    service.ended.wait()
