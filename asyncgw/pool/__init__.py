"""A parallel map over any gateways: :class:`Pool` (async) here, and
:class:`asyncgw.sync.Executor`, a :class:`concurrent.futures.Executor`.

A layer over the public async API (groups, gateways, channels), as the
fleet and the remote objects are. Its modules, one job each:
:mod:`~asyncgw.pool.pool` (the public class), :mod:`~asyncgw.pool.scheduler`
(items to free gateways, failures), :mod:`~asyncgw.pool.link` (one
gateway's task loop), :mod:`~asyncgw.pool.chunking` (chunk sizes),
:mod:`~asyncgw.pool.jobs` (where results go), :mod:`~asyncgw.pool.functions`
(functions shipped as source); its far side, the loop that runs there
(stdlib only), is :mod:`asyncgw.remote.pool`.
"""

from __future__ import annotations

from .pool import Pool

__all__ = ["Pool"]
