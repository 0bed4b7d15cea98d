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

Invariants: messages are read by the channel's callback (the worker's
reader thread), so a cancel overtakes the chunks queued before it; the
functions run one at a time in the thread ``remote_exec`` gave us, in the
order the chunks came; the loop ends when the caller closes the channel.
"""

from __future__ import annotations

import collections
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

DEFINE, CHUNK, CANCEL = 0, 1, 2
FAILED, SKIPPED = 1, 2


class _State:
    """What the reader thread hands the running thread."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.chunks: collections.deque[Any] = collections.deque()
        self.cancelled: dict[int, set[int] | None] = {}  # chunk id -> positions (None: all)
        self.ended = False
        self.current: tuple[int, int] | None = None  # (chunk id, position) running now

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
        current = self.current
        return current is not None and self.is_cancelled(*current)

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


def _run_chunk(state: _State, channel: Any, functions: dict[int, Any], message: Any) -> None:
    _, chunk_id, fn_id, mode, items = message
    function = functions.get(fn_id, "no definition was received")
    values: list[Any] = []
    failures: dict[int, tuple[int, str | None]] | None = None
    started = time.perf_counter()
    for position, item in enumerate(items):
        value = None
        if state.is_cancelled(chunk_id, position):
            failures = failures or {}
            failures[position] = (SKIPPED, None)
        else:
            state.current = (chunk_id, position)
            try:
                if isinstance(function, str):  # its definition failed
                    raise RuntimeError("the function could not be defined:\n" + function)
                if mode == 0:
                    value = function(item)
                elif mode == 1:
                    value = function(*item)
                else:
                    value = function(*item[0], **item[1])
            except Exception as exc:  # it fails its own item, not the chunk
                failures = failures or {}
                failures[position] = (FAILED, _format(exc))
            finally:  # (KeyboardInterrupt: the worker is exiting; the caller sees it lost)
                state.current = None
        values.append(value)
    _send(channel, chunk_id, 0, values, failures, started)
    with state.cond:
        state.cancelled.pop(chunk_id, None)


def _format(exc: BaseException) -> str:
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
        channel.send((chunk_id, offset, values, failures, elapsed))
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
