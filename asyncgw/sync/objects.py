"""Remote objects in :mod:`asyncgw.sync`: blocking proxies.

``proxy = gateway.create(Counter, start=1)`` (a facade gateway) gives a
:class:`Proxy` whose method calls block until the remote call returns::

    counter.add(5)                # runs remotely; its result (value or proxy)
    fetch(counter.total)          # an attribute read (attributes are lazy)
    fetch(counter.owner.name)     # a chain, still one round trip
    for item in counter.history():    # a remote generator, in batches
        ...
    counter.close()               # or: with counter: ...

Each blocking proxy owns an async one (:mod:`asyncgw.objects.proxy`) and
runs it on the facade's loop thread, so one proxy may be used from many
threads at once. An attribute read is lazy because, without ``await``,
nothing else marks where a chain ends: calling a chain runs it, and
:func:`fetch` runs one that ends in an attribute.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .._loopthread import run_blocking
from ..objects import proxy as _proxy

__all__ = ["Chain", "Proxy", "RemoteIterator", "fetch", "present_result"]


def present_result(value: Any) -> Any:
    """An async result as the facade gives it: proxies and iterators blocking."""
    if isinstance(value, _proxy.Proxy):
        return Proxy(value)
    if isinstance(value, _proxy.RemoteIterator):
        return RemoteIterator(value)
    return value


def _unwrap(value: Any) -> Any:
    """Arguments with blocking proxies replaced by their async ones."""
    return _proxy.map_leaves(value, lambda leaf: leaf._target if isinstance(leaf, Proxy) else leaf)


class _Lazy:
    """Attribute reads, item reads and calls on an async proxy or chain
    (``_target``), blocking: a call runs the chain it ends."""

    __slots__ = ("_target",)

    def __init__(self, target: _proxy.Proxy | _proxy.Chain) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Chain:
        if name.startswith("__"):
            raise AttributeError(name)
        return Chain(getattr(self._target, name))

    def __getitem__(self, key: Any) -> Chain:
        return Chain(self._target[_unwrap(key)])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        chain = self._target(*_unwrap(args), **_unwrap(kwargs))
        return present_result(chain._evaluate_blocking())

    def __repr__(self) -> str:
        return repr(self._target)


class Chain(_Lazy):
    """Lazy attribute reads from a blocking proxy; calling one runs it."""

    __slots__ = ()
    _target: _proxy.Chain

    def __iter__(self) -> Iterator[Any]:
        result = present_result(self._target._evaluate_blocking())
        if not isinstance(result, RemoteIterator):
            raise TypeError(f"{self._target!r} is not a remote generator")
        return iter(result)


def fetch(chain: Chain | Proxy) -> Any:
    """Run a chain that ends in an attribute (``fetch(proxy.a.b)``)."""
    if isinstance(chain, Proxy):
        return chain
    if not isinstance(chain, Chain):
        raise TypeError(f"fetch() takes a chain from a proxy, not {type(chain).__name__}")
    return present_result(chain._target._evaluate_blocking())


class Proxy(_Lazy):
    """A remote object, blocking (see the module docstring)."""

    __slots__ = ()
    _target: _proxy.Proxy

    def close(self) -> None:
        """Release the remote object now."""
        run_blocking(self._target.close)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RemoteIterator:
    """A remote generator, iterated in batches from this thread."""

    def __init__(self, iterator: _proxy.RemoteIterator) -> None:
        self._iterator = iterator

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                batch = run_blocking(self._iterator._next_batch)
                if not batch:
                    return
                yield from (present_result(item) for item in batch)
        finally:
            self.close()

    def close(self) -> None:
        """Stop: close the remote generator."""
        run_blocking(self._iterator.aclose)
