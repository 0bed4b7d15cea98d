"""Gateways' deaths as events, and groups that restart dead members.

These are core behaviour and live in the core (:mod:`asyncgw._supervision`,
which ``_gateway`` and ``_group`` use without importing this layer); this
module keeps their names where they were first published.
:class:`Death` and :class:`RestartPolicy` are also :class:`asyncgw.Death`
and :class:`asyncgw.RestartPolicy`.
"""

from __future__ import annotations

from .. import _supervision
from .._supervision import Death, DeathWatch, GroupSupervisor, RestartPolicy

__all__ = ["REAP_WAIT", "Death", "DeathWatch", "GroupSupervisor", "RestartPolicy"]

#: Seconds a death report waits for the transport to close (the process to
#: be reaped) before it is made with what is known.
REAP_WAIT = _supervision.REAP_WAIT
