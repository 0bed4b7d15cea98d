"""pytest-xdist on asyncgw gateways: ``pytest -p asyncgw.xdist -n 4``.

Loading this plugin (``-p asyncgw.xdist`` on the command line, in
``addopts`` or in ``PYTEST_ADDOPTS``: pytest imports ``-p`` plugins before
the installed ones, xdist among them) makes ``import execnet`` give
:mod:`asyncgw.sync`, here and — because the facade then asks for it — in
every worker, whose side of xdist imports ``execnet`` too. xdist itself is
not modified and nothing is installed where the workers run.

What it adds to xdist's own behaviour is speed: xdist starts its workers
one after the other; when it announces them (``pytest_xdist_setupnodes``)
this plugin starts them all at once, and popen workers of one interpreter
fork from a fork server that has already imported pytest.

The installed pytest plugins are not imported ahead: pytest rewrites the
assertions of their modules as it imports them in the worker, which it
cannot do for a module already imported (it warns, once per plugin, and
their assertion helpers lose their messages). Measured with ``nox -s
bench_xdist``, importing them ahead no longer saved any time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pytest

from . import compat

# xdist passes our command line (``-p asyncgw.xdist`` included) on to its
# workers. There the worker's own execnet must stay: this plugin does
# nothing (and a worker with no asyncgw installed gets an empty stand-in
# for this module from the worker; see remote/alias.py).
IN_WORKER = "PYTEST_XDIST_WORKER" in os.environ

execnet = None if IN_WORKER else compat.install()

__all__ = ["PRELOAD", "pytest_xdist_setupnodes"]

#: What every xdist worker imports first: done once, in the fork server
#: (asyncgw too: xdist hands workers ``-p asyncgw.xdist``, which imports it).
PRELOAD = ["pytest", "_pytest.config", "_pytest.main", "_pytest.runner", "asyncgw"]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs: Sequence[Any]) -> None:
    """Start every announced worker now, in parallel; xdist's calls to
    ``makegateway`` that follow, one spec at a time, get them."""
    if execnet is None:
        return
    dsession = config.pluginmanager.getplugin("dsession")
    group = getattr(getattr(dsession, "nodemanager", None), "group", None)
    if not isinstance(group, execnet.Group):
        return  # not a session of ours (a plugin replaced xdist's pieces)
    group._group.preload = list(PRELOAD)
    group._prestart(list(specs))
