"""Where the layers above the core plug into it, so the core imports none.

A gateway's start and ``Gateway.create`` need services that live in a layer
(``asyncgw.objects``: log and import forwarding, remote objects). The core
owns these registration points and calls whatever is registered; the layer
registers when it is imported, and ``asyncgw/__init__`` imports it, so a
program that only does ``import asyncgw`` has them (spec keys
``forward_logs`` and ``forward_imports`` work without importing
``asyncgw.objects`` by hand).

Invariant: this module imports only ``_errors`` at run time; what is
registered runs on the event loop, in registration order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._errors import AsyncgwError

if TYPE_CHECKING:
    from ._gateway import Gateway

__all__ = ["START_HOOKS", "ObjectFactory", "object_factory", "set_object_factory"]

#: Called with each new gateway once its worker has greeted us, before the
#: start returns; an exception fails the start (the gateway is killed).
START_HOOKS: list[Callable[[Gateway], Awaitable[None]]] = []

#: ``Gateway.create``'s implementation: ``factory(gateway, target, *args, **kwargs)``.
ObjectFactory = Callable[..., Awaitable[Any]]

_object_factory: list[ObjectFactory] = []


def set_object_factory(factory: ObjectFactory) -> None:
    """Make ``factory`` what ``Gateway.create`` calls (the last one set wins)."""
    _object_factory[:] = [factory]


def object_factory() -> ObjectFactory:
    """What ``Gateway.create`` calls.

    :raises AsyncgwError: if no layer registered one (``asyncgw.objects`` does).
    """
    if not _object_factory:
        raise AsyncgwError("no remote-object layer is registered (import asyncgw.objects)")
    return _object_factory[0]
