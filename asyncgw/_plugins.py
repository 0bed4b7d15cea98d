"""Installed third-party transports, as entry points (read once, on first need).

Low in the core so that both the spec parser (``_spec``: is ``key`` a
plug-in's transport key?) and the transport registry (``transports``: load
it) ask the same cache without ``_spec`` importing ``transports``, which
imports ``_spec``. Standard library only.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points

__all__ = ["BUILTIN_TRANSPORTS", "ENTRY_POINT_GROUP", "plugin_transports"]

#: The entry-point group plug-in transports register in: the entry
#: point's name is the spec key, its object a ``TransportFactory``.
ENTRY_POINT_GROUP = "asyncgw.transports"

#: Spec keys of the built-in transports, which win a clash with a plug-in
#: (``asyncgw.transports`` fills it in when imported).
BUILTIN_TRANSPORTS: set[str] = set()


@functools.cache
def plugin_transports() -> dict[str, EntryPoint]:
    """Installed third-party transports by spec key (built-ins win a clash)."""
    return {
        entry.name: entry
        for entry in entry_points(group=ENTRY_POINT_GROUP)
        if entry.name not in BUILTIN_TRANSPORTS
    }
