"""The functions a pool runs: checked here, shipped once per gateway.

A function travels as its source text, as ``Gateway.call`` sends it
(:func:`asyncgw._code.function_source` checks that it is self-contained,
locally, with the offending name in the error), with blank lines ahead of
it so that remote tracebacks give the line numbers of the caller's file.
Each gateway is sent a function's definition before the first chunk that
uses it (:mod:`asyncgw.pool.link`), then only its number.
"""

from __future__ import annotations

import inspect
import itertools
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any

from .._code import function_source

__all__ = ["Function", "function_for"]

_numbers = itertools.count(1)


class Function:
    """A function as the far side gets it.

    :ivar number: its id in the messages, unique in this process.
    :ivar definition: the message that defines it on a gateway.
    """

    __slots__ = ("definition", "function", "name", "number")

    def __init__(self, function: types.FunctionType) -> None:
        source = function_source(function)
        self.function = function
        self.name = function.__qualname__
        self.number = next(_numbers)
        padded = "\n" * (function.__code__.co_firstlineno - 1) + source
        filename = inspect.getsourcefile(function) or "<pool function>"
        is_async = inspect.iscoroutinefunction(function)
        self.definition = (0, self.number, padded, function.__name__, filename, is_async)

    def __repr__(self) -> str:
        return f"<Function {self.name} #{self.number}>"


_lock = threading.Lock()
_known: weakref.WeakKeyDictionary[Callable[..., Any], Function] = weakref.WeakKeyDictionary()


def function_for(function: Callable[..., Any]) -> Function:
    """The :class:`Function` of ``function``, made once (thread-safe: the
    blocking executor calls this in the caller's thread, so that a function
    that cannot be sent fails there, at once).

    :raises TypeError: for anything but a plain function.
    :raises ValueError: for a function that is not self-contained.
    """
    with _lock:
        known = _known.get(function)
    if known is not None:
        return known
    if not isinstance(function, types.FunctionType):
        raise TypeError(f"a pool runs plain functions, not {type(function).__name__}")
    made = Function(function)
    with _lock:
        return _known.setdefault(function, made)
