"""Above the gateways, pyacq's model: remote objects used through proxies,
remote logs forwarded here, gateways' deaths as events, and imports of the
caller's own modules served to remote code (DESIGN §5).

Importing this package registers its services with the core
(:mod:`asyncgw._hooks`): what a gateway's spec or group asks for at its
start (:mod:`.services`), and ``Gateway.create`` (:mod:`.proxy`).
``asyncgw`` imports it, so they are there for every program.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import _hooks
from .services import start_services

if TYPE_CHECKING:
    from .._gateway import Gateway


async def _create(gateway: Gateway, target: Any, /, *args: Any, **kwargs: Any) -> Any:
    # Imported on first use: most programs make no remote objects.
    from .proxy import create

    return await create(gateway, target, *args, **kwargs)


if start_services not in _hooks.START_HOOKS:
    _hooks.START_HOOKS.append(start_services)
_hooks.set_object_factory(_create)
