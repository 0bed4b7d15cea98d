"""Turning what ``remote_exec`` and ``call`` are given into source to ship.

A function is sent as its source text, so it must be self-contained: no
closure, no decorators, and no module globals besides builtins (imports go
inside the function). That is checked here, locally, so the mistake is
reported with the offending name instead of as a NameError from afar.
"""

from __future__ import annotations

import builtins
import dis
import inspect
import textwrap
import types
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["ExecRequest", "call_request", "exec_request"]

#: (source, function name or None, kwargs or None, function is async)
#: (source, function name, kwargs, is async, file name for tracebacks)
ExecRequest = tuple[str, "str | None", "dict[str, Any] | None", bool, "str | None"]

_CALL_TAIL = """
__asyncgw_args, __asyncgw_kwargs = channel.receive()
channel.send({name}(*__asyncgw_args, **__asyncgw_kwargs))
"""
_ACALL_TAIL = """
__asyncgw_args, __asyncgw_kwargs = await channel.receive()
await channel.send(await {name}(*__asyncgw_args, **__asyncgw_kwargs))
"""


def exec_request(
    code: str | types.ModuleType | Callable[..., Any], kwargs: dict[str, Any]
) -> ExecRequest:
    """What to send for ``remote_exec(code, **kwargs)``.

    :raises TypeError: for anything but source, a module or a plain function,
        or for kwargs given with source or a module.
    :raises ValueError: for a function that is not self-contained.
    """
    if isinstance(code, str):
        _no_kwargs(kwargs, "source text")
        return textwrap.dedent(code), None, None, False, None
    if isinstance(code, types.ModuleType):
        _no_kwargs(kwargs, "a module")
        # Its own file name, so that remote tracebacks point at it.
        return inspect.getsource(code), None, None, False, inspect.getsourcefile(code)
    if isinstance(code, types.FunctionType):
        # Its own file name and line numbers (blank lines before it), so
        # that remote tracebacks point into the caller's file.
        source = "\n" * (code.__code__.co_firstlineno - 1) + function_source(code)
        filename = inspect.getsourcefile(code)
        return source, code.__name__, kwargs, inspect.iscoroutinefunction(code), filename
    raise TypeError(
        f"remote_exec takes source text, a module or a function, not {type(code).__name__}"
    )


def call_request(function: Callable[..., Any]) -> str:
    """Source that runs ``function(*args, **kwargs)`` with the arguments it
    receives first, and sends back the result."""
    if not isinstance(function, types.FunctionType):
        raise TypeError(f"call() takes a plain function, not {type(function).__name__}")
    tail = _ACALL_TAIL if inspect.iscoroutinefunction(function) else _CALL_TAIL
    return function_source(function) + tail.format(name=function.__name__)


def _no_kwargs(kwargs: dict[str, Any], what: str) -> None:
    if kwargs:
        raise TypeError(
            f"keyword arguments {sorted(kwargs)} can only be passed to a function, not {what}"
        )


def function_source(function: types.FunctionType) -> str:
    """The dedented source of a self-contained function.

    :raises ValueError: naming what ties the function to its surroundings.
    """
    name = function.__qualname__
    if function.__name__ == "<lambda>":
        raise ValueError("a lambda cannot be sent; define a function with def")
    if function.__closure__:
        free = ", ".join(function.__code__.co_freevars)
        raise ValueError(f"function {name} uses variables of an enclosing scope ({free})")
    source, global_names = _analyse(function)
    if source.lstrip().startswith("@"):
        raise ValueError(f"function {name} is decorated; only plain functions can be sent")
    module_globals = [
        global_name
        for global_name in global_names
        if global_name != function.__name__
        and global_name in function.__globals__
        and not hasattr(builtins, global_name)
    ]
    if module_globals:
        raise ValueError(
            f"function {name} uses module globals {module_globals}; "
            "import or define them inside the function"
        )
    return source


#: Source and global names per code object: ``inspect.getsource`` reads and
#: tokenizes the whole file, far too slow to repeat for every ``call``.
_ANALYSED: weakref.WeakKeyDictionary[types.CodeType, tuple[str, list[str]]] = (
    weakref.WeakKeyDictionary()
)


def _analyse(function: types.FunctionType) -> tuple[str, list[str]]:
    code = function.__code__
    cached = _ANALYSED.get(code)
    if cached is None:
        try:
            source = textwrap.dedent(inspect.getsource(function))
        except OSError as exc:
            raise ValueError(
                f"the source of function {function.__qualname__} is not available: {exc}"
            ) from None
        cached = _ANALYSED[code] = (source, sorted(_global_names(code)))
    return cached


def _global_names(code: types.CodeType) -> set[str]:
    names = {
        instruction.argval
        for instruction in dis.get_instructions(code)
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME")
    }
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names
