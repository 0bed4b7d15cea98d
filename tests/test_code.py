"""What remote_exec accepts, checked locally before anything is sent."""

from __future__ import annotations

import os

import pytest

from asyncgw._code import call_request, exec_request


def self_contained(channel, n=1):  # type: ignore[no-untyped-def]
    import math

    channel.send(math.factorial(n))


def uses_module_global(channel):  # type: ignore[no-untyped-def]
    channel.send(os.getpid())


def recursive(channel, n):  # type: ignore[no-untyped-def]
    return 1 if n <= 1 else n * recursive(channel, n - 1)


def test_function_source_and_kwargs() -> None:
    source, name, kwargs, is_async, filename = exec_request(self_contained, {"n": 5})
    # padded so that line numbers are those of this file
    first = self_contained.__code__.co_firstlineno
    assert source.splitlines()[first - 1].startswith("def self_contained(channel")
    assert source[: first - 1] == "\n" * (first - 1)
    assert (name, kwargs, is_async, filename) == ("self_contained", {"n": 5}, False, __file__)


def test_recursion_is_allowed() -> None:
    assert exec_request(recursive, {"n": 3})[1] == "recursive"


def test_module_global_is_named() -> None:
    with pytest.raises(ValueError, match=r"module globals \['os'\]"):
        exec_request(uses_module_global, {})


def test_closure_is_rejected() -> None:
    factor = 3

    def closure(channel):  # type: ignore[no-untyped-def]
        channel.send(factor)

    with pytest.raises(ValueError, match=r"enclosing scope \(factor\)"):
        exec_request(closure, {})


def test_lambda_and_decorated_and_builtin_are_rejected() -> None:
    with pytest.raises(ValueError, match="lambda"):
        exec_request(lambda channel: None, {})

    @staticmethod  # type: ignore[misc]
    def decorated(channel):  # type: ignore[no-untyped-def]
        pass

    with pytest.raises((ValueError, TypeError)):
        exec_request(decorated, {})
    with pytest.raises(TypeError, match="not builtin_function_or_method"):
        exec_request(len, {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="plain function"):
        call_request(len)


def test_kwargs_only_for_functions() -> None:
    with pytest.raises(TypeError, match=r"keyword arguments \['x'\].*source text"):
        exec_request("pass", {"x": 1})
    with pytest.raises(TypeError, match="module"):
        exec_request(os, {"x": 1})


def test_non_code_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not int"):
        exec_request(42, {})  # type: ignore[arg-type]
