"""Files over gateways: :class:`RSync` sends a directory tree to many
gateways, only what changed travelling."""

from __future__ import annotations

from .rsync import RSync

__all__ = ["RSync"]
