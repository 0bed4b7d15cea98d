"""The pool's far side: a task loop, shipped as source to every gateway.

Runs on the remote interpreter (stdlib only, Python 3.9+), started by
``remote_exec`` of this module's source; the module's last lines run
:func:`serve` on the channel. Messages from the caller (lists and tuples
of wire values, no pickle either way):

- ``(DEFINE, fn_id, source, name, filename, is_async)``: compile a
  self-contained function once; later chunks name it by ``fn_id``;
- ``(CHUNK, chunk_id, fn_id, mode, args)``: run the function on each item
  of ``args`` in order (``mode`` 0: ``fn(item)``, 1: ``fn(*item)``, 2:
  ``fn(*item[0], **item[1])``);
- ``(CANCEL, chunk_id, positions)``: skip those items of the chunk if they
  have not started (``None``: all); a running one sees
  ``asyncgw_cancelled()`` turn true.

Answers: ``(chunk_id, offset, values, failures, elapsed)``, one per chunk:
``values[i]`` is the result of item ``offset + i``; ``failures`` is None
or maps a position to ``(FAILED, traceback text)`` or ``(SKIPPED, None)``;
``elapsed`` is the seconds the chunk ran (the caller sizes chunks by it).
A result the wire cannot carry fails its own item, not the chunk.

Packed runs: a chunk's ``args`` or an answer's ``values`` that are all
plain ints of 64 bits, or all floats, travel as ``(code, raw)``: the
array module's type code (``"q"``, ``"d"``) and the values' 8-byte
little-endian machine form (:func:`pack`, :func:`unpack`, used by both
sides). The wire's codec spends a few hundred nanoseconds of Python per
value, the array module a few; the values come back the same (an int
subclass, a bool or a mix is never packed). A chunk's ``args`` taken from
a ``range`` travel as ``("r", start, stop, step)`` (:func:`items_of`; the
caller never accepts this form in an answer).

Invariants: messages are read by the channel's callback (the worker's
reader thread), so a cancel overtakes the chunks queued before it; the
functions run one at a time in the thread ``remote_exec`` gave us, in the
order the chunks came; the loop ends when the caller closes the channel.
"""

from __future__ import annotations

import array
import collections
import sys
import threading
import time

# traceback (with linecache, tokenize, textwrap) is imported when a task
# fails, and typing never: a few milliseconds of every gateway's first
# task otherwise.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

DEFINE, CHUNK, CANCEL = 0, 1, 2
FAILED, SKIPPED = 1, 2

#: Runs shorter than this travel as wire values (packing them saves nothing).
PACK_MIN = 4
#: Type codes of packed runs, by the type of their values (8-byte items only).
_CODES: dict[type, str] = {
    kind: code for kind, code in ((int, "q"), (float, "d")) if array.array(code).itemsize == 8
}
_SWAP = sys.byteorder != "little"


def pack(values: list[Any]) -> list[Any] | tuple[str, bytes]:
    """``values`` as a packed run, if they are all plain ints of 64 bits or
    all floats (and there are :data:`PACK_MIN` at least); else as they are."""
    if len(values) < PACK_MIN:
        return values
    kinds = set(map(type, values))
    code = _CODES.get(kinds.pop()) if len(kinds) == 1 else None
    if code is None:
        return values
    try:
        packed = array.array(code, values)
    except OverflowError:  # an int beyond 64 bits
        return values
    if _SWAP:
        packed.byteswap()
    return code, packed.tobytes()


def unpack(values: Any) -> list[Any]:
    """The values of a packed run (a list passes as it is).

    :raises ValueError: for a run that is not one :func:`pack` makes.
    """
    if type(values) is list:
        return values
    if type(values) is not tuple or len(values) != 2:
        raise ValueError("not a run of values: %r" % (type(values),))
    code, raw = values
    if code not in _CODES.values() or type(raw) is not bytes or len(raw) % 8:
        raise ValueError("not a packed run of values")
    packed = array.array(code)
    packed.frombytes(raw)
    if _SWAP:
        packed.byteswap()
    return packed.tolist()


class _State:
    """What the reader thread hands the running thread."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.chunks: collections.deque[Any] = collections.deque()
        self.cancelled: dict[int, set[int] | None] = {}  # chunk id -> positions (None: all)
        self.ended = False
        # The item running now: its chunk's id, and its position (None: none runs).
        self.chunk = -1
        self.position: int | None = None

    def on_message(self, message: Any) -> None:
        kind = message[0] if isinstance(message, (tuple, list)) else None
        with self.cond:
            if kind == CHUNK:
                self.chunks.append(message)
            elif kind == DEFINE:
                self.chunks.append(message)  # in order with the chunks
            elif kind == CANCEL:
                chunk_id, positions = message[1], message[2]
                if positions is None:
                    self.cancelled[chunk_id] = None
                else:
                    known = self.cancelled.setdefault(chunk_id, set())
                    if known is not None:
                        known.update(positions)
            else:  # the endmarker: the caller closed the channel
                self.ended = True
            self.cond.notify()

    def is_cancelled(self, chunk_id: int, position: int) -> bool:
        with self.cond:
            if chunk_id not in self.cancelled:
                return False
            positions = self.cancelled[chunk_id]
            return positions is None or position in positions

    def running_cancelled(self) -> bool:
        position = self.position
        return position is not None and self.is_cancelled(self.chunk, position)

    def next_message(self) -> Any:
        with self.cond:
            while not self.chunks and not self.ended:
                self.cond.wait()
            # Once the caller has closed, queued chunks have no one to answer.
            return None if self.ended else self.chunks.popleft()


def _compile(
    state: _State, source: str, name: str, filename: str | None, is_async: bool
) -> Callable[..., Any]:
    namespace: dict[str, Any] = {
        "__name__": "__channelexec__",
        "asyncgw_cancelled": state.running_cancelled,
    }
    exec(compile(source, filename or "<pool function>", "exec"), namespace)
    function: Callable[..., Any] = namespace[name]
    if not is_async:
        return function
    import asyncio

    def run(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(function(*args, **kwargs))

    return run


def items_of(run: Any) -> Any:
    """The items of a chunk: :func:`unpack`, or a range's.

    :raises ValueError: for a run that is neither.
    """
    if type(run) is tuple and len(run) == 4 and run[0] == "r":
        _, start, stop, step = run
        if not all(type(bound) is int for bound in (start, stop, step)) or not step:
            raise ValueError("not a range of items")
        return range(start, stop, step)
    return unpack(run)


def _run_chunk(state: _State, channel: Any, functions: dict[int, Any], message: Any) -> None:
    _, chunk_id, fn_id, mode, items = message
    function = functions.get(fn_id, "no definition was received")
    values: list[Any] = []
    failures: dict[int, tuple[int, str | None]] | None = None
    started = time.perf_counter()
    items = items_of(items)  # (a ValueError ends the loop: not a message of our caller)
    if isinstance(function, str):  # its definition failed: reported with each item
        function = _failing("the function could not be defined:\n" + function)
    # Read without the lock: a cancel only ever adds to it (and ours are
    # dropped after the chunk), so while it is empty no item is cancelled.
    cancelled = state.cancelled
    state.chunk = chunk_id
    append = values.append
    for position, item in enumerate(items):
        if cancelled and state.is_cancelled(chunk_id, position):
            failures = failures or {}
            failures[position] = (SKIPPED, None)
            append(None)
            continue
        state.position = position
        try:
            if mode == 0:
                append(function(item))
            elif mode == 1:
                append(function(*item))
            else:
                append(function(*item[0], **item[1]))
        except Exception as exc:  # it fails its own item, not the chunk
            failures = failures or {}
            failures[position] = (FAILED, _format(exc))
            append(None)
    # (Left set on KeyboardInterrupt: the worker is exiting; the caller sees it lost.)
    state.position = None
    _send(channel, chunk_id, 0, values, failures, started)
    if cancelled:
        with state.cond:
            cancelled.pop(chunk_id, None)


def _failing(reason: str) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(reason)

    return fail


def _format(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _send(
    channel: Any,
    chunk_id: int,
    offset: int,
    values: list[Any],
    failures: dict[int, tuple[int, str | None]] | None,
    started: float,
) -> None:
    elapsed = time.perf_counter() - started
    try:
        channel.send((chunk_id, offset, values if failures else pack(values), failures, elapsed))
        return
    except (OSError, EOFError):
        raise
    except Exception:  # a value the wire cannot carry: fails its own item only
        pass
    for position, value in enumerate(values):
        failure = (failures or {}).get(position)
        try:
            channel.send((chunk_id, offset + position, [value], failure and {0: failure}, elapsed))
        except (OSError, EOFError):
            raise
        except Exception as exc:
            text = f"DumpError: the result cannot be sent: {exc}"
            channel.send((chunk_id, offset + position, [None], {0: (FAILED, text)}, elapsed))


def serve(channel: Any) -> None:
    """Run chunks from ``channel`` until the caller closes it."""
    state = _State()
    functions: dict[int, Any] = {}
    channel.setcallback(state.on_message, endmarker=None)
    while True:
        message = state.next_message()
        if message is None:
            return
        if message[0] == DEFINE:
            _, fn_id, source, name, filename, is_async = message
            try:
                functions[fn_id] = _compile(state, source, name, filename, is_async)
            except BaseException as exc:  # reported with each item
                functions[fn_id] = _format(exc)
        else:
            _run_chunk(state, channel, functions, message)


if __name__ == "__channelexec__":
    serve(channel)  # type: ignore[name-defined]  # noqa: F821 - given by remote_exec
