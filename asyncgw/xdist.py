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
fork from a fork server that has already imported pytest and the
installed pytest plugins. pytest rewrites the assertions of the plugins'
modules as it imports them, and warns about one imported before; so the
fork server imports them through pytest's own rewriting hook
(:mod:`asyncgw._xdist_preload`), and only when the session would import
all of them that way (:func:`plugins_preloadable`). The controller's
callback for the workers' events runs on the facade's loop thread as
they arrive, as it runs on execnet's receiver thread
(:func:`inline_event_callback`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import pytest

from . import compat
from .sync.channel import run_inline

# xdist passes our command line (``-p asyncgw.xdist`` included) on to its
# workers. There the worker's own execnet must stay: this plugin does
# nothing (and a worker with no asyncgw installed gets an empty stand-in
# for this module from the worker; see remote/alias.py).
IN_WORKER = "PYTEST_XDIST_WORKER" in os.environ

execnet = None if IN_WORKER else compat.install()

__all__ = [
    "PLUGINS",
    "PRELOAD",
    "inline_event_callback",
    "plugins_preloadable",
    "pytest_xdist_setupnodes",
]

#: What every xdist worker imports first: done once, in the fork server
#: (asyncgw too: xdist hands workers ``-p asyncgw.xdist``, which imports it).
PRELOAD = ["pytest", "_pytest.config", "_pytest.main", "_pytest.runner", "asyncgw"]

#: Imported after :data:`PRELOAD` when :func:`plugins_preloadable`: the
#: installed pytest plugins, through pytest's assertion rewriting.
PLUGINS = "asyncgw._xdist_preload"


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
    group._group.preload = [*PRELOAD, *([PLUGINS] if plugins_preloadable(config) else [])]
    inline_event_callback()
    group._prestart(list(specs))


def inline_event_callback() -> None:
    """xdist's controller turns each worker's event into a queued one in a
    callback that never blocks (it runs on execnet's receiver thread):
    run it on the facade's loop thread as events arrive, sparing a thread
    hand-off per event (:func:`asyncgw.sync.channel.run_inline`)."""
    workermanage = sys.modules.get("xdist.workermanage")  # imported by xdist's session
    controller = getattr(workermanage, "WorkerController", None)
    process = getattr(controller, "process_from_remote", None)
    if process is not None:
        run_inline(process)


def plugins_preloadable(config: pytest.Config) -> bool:
    """Whether the fork server may import the installed plugins ahead, as
    each worker's pytest would (:mod:`asyncgw._xdist_preload`): only when
    the session rewrites assertions with pytest's defaults, loads plugins
    from entry points and blocks none of them."""
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    if config.getoption("assertmode", "rewrite") != "rewrite":
        return False
    if config.getini("enable_assertion_pass_hook"):
        return False
    from importlib.metadata import entry_points

    manager = config.pluginmanager
    return not any(manager.is_blocked(entry.name) for entry in entry_points(group="pytest11"))
