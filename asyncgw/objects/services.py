"""What starts with a gateway when its spec or group asks: log forwarding
and import forwarding. Called by ``open_gateway`` once the worker has
greeted us; a failure here fails the start (the gateway is killed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._gateway import Gateway

__all__ = ["forwarded_imports", "forwards_logs", "start_services"]


def forwards_logs(gateway: Gateway) -> bool:
    """Whether ``gateway`` forwards its logs (its spec, else its group)."""
    if gateway.spec.forward_logs is not None:
        return bool(gateway.spec.forward_logs)
    return bool(gateway.group is not None and gateway.group.forward_logs)


def forwarded_imports(gateway: Gateway) -> list[str]:
    """The top-level names ``gateway``'s imports may fetch from here."""
    if gateway.spec.forward_imports:
        return [name.strip() for name in gateway.spec.forward_imports.split(",") if name.strip()]
    return list(gateway.group.forward_imports) if gateway.group is not None else []


async def start_services(gateway: Gateway) -> None:
    """Start what ``gateway``'s spec and group ask for."""
    # Imported only when asked for: most gateways forward nothing.
    if forwards_logs(gateway):
        from .logs import start_log_forwarding

        await start_log_forwarding(gateway)
    names = forwarded_imports(gateway)
    if names:
        from .imports import start_import_forwarding

        await start_import_forwarding(gateway, names)
