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
installed pytest plugins, started ahead as pytest registers this plugin
when the command line asks for several workers (:func:`pytest_addoption`).
pytest rewrites the assertions of the plugins' modules as it imports
them, and warns about one imported before; so the fork server imports
them through pytest's own rewriting hook
(:mod:`asyncgw._xdist_preload`), and only when the session would import
all of them that way (:func:`plugins_preloadable`). The controller's
callback for the workers' events runs on the facade's loop thread as
they arrive, as it runs on execnet's receiver thread
(:func:`inline_event_callback`).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

import pytest

from . import compat
from ._loopthread import call_blocking, loop_thread, run_blocking
from ._spec import XSpec
from .sync.channel import run_inline
from .sync.group import Group
from .transports.forkserver import ForkServers

# xdist passes our command line (``-p asyncgw.xdist`` included) on to its
# workers. There the worker's own execnet must stay: this plugin does
# nothing (and a worker with no asyncgw installed gets an empty stand-in
# for this module from the worker; see remote/alias.py).
IN_WORKER = "PYTEST_XDIST_WORKER" in os.environ

execnet = None if IN_WORKER else compat.install()

__all__ = [
    "PLUGINS",
    "PRELOAD",
    "adopt_ahead",
    "inline_event_callback",
    "plugins_preloadable",
    "pytest_addoption",
    "pytest_xdist_setupnodes",
    "several_popen_workers",
    "start_ahead",
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
    preload = [*PRELOAD, *([PLUGINS] if plugins_preloadable(config) else [])]
    group._group.preload = preload
    adopt_ahead(group, preload)
    inline_event_callback()
    group._prestart(list(specs))


@pytest.hookimpl
def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """Called as pytest registers this plugin, before it imports the
    installed plugins and reads the rest of its configuration (a tenth of
    a second and more): if the command line asks xdist for several popen
    workers, start their fork server now, on another core, so that it has
    imported pytest and the plugins by the time xdist announces the
    workers (:func:`start_ahead`)."""
    if execnet is None:
        return
    config = pluginmanager.get_plugin("pytestconfig")
    if not isinstance(config, pytest.Config):
        return
    try:
        args = [
            *shlex.split(os.environ.get("PYTEST_ADDOPTS", "")),
            *config.getini("addopts"),
            *config.invocation_params.args,
        ]
    except (ValueError, TypeError):  # left to pytest to report
        return
    if several_popen_workers(args):
        start_ahead([*PRELOAD, *([PLUGINS] if plugins_preloadable(config, args) else [])])


def several_popen_workers(args: Sequence[str]) -> bool:
    """Whether ``args`` ask xdist for several workers of this interpreter
    (``-n N``, ``-n auto``) and nothing that stops it starting them."""
    value = None
    for index, arg in enumerate(args):
        if arg == "--":
            break
        if arg in ("-h", "--help", "--version", "-V", "--tx", "--px", "-d"):
            return False
        if arg in ("-pno:xdist", "no:xdist"):
            return False
        if arg in ("-n", "--numprocesses") and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith("--numprocesses="):
            value = arg.partition("=")[2]
        elif arg.startswith("-n") and not arg.startswith("--"):
            value = arg[2:]
    if value in ("auto", "logical"):
        return (os.cpu_count() or 1) > 1
    return value is not None and value.isdigit() and int(value) > 1


#: The fork servers :func:`start_ahead` started and the preload they
#: import, until xdist's group adopts them (or the interpreter exits).
_ahead: tuple[ForkServers, list[str]] | None = None


def start_ahead(preload: list[str]) -> None:
    """Start a fork server for this interpreter's popen workers, importing
    ``preload``, before xdist has a group for it (see :func:`adopt_ahead`)."""
    global _ahead
    if _ahead is not None:
        return
    forkservers = ForkServers()
    popen = XSpec("popen")
    call_blocking(forkservers.start_for, [popen, popen], list(preload))
    _ahead = (forkservers, list(preload))
    loop_thread.shutdown_hooks.append(_close_ahead)


def adopt_ahead(group: Group, preload: list[str]) -> None:
    """Give ``group`` the fork server started ahead, if it imports
    ``preload`` (the session's options could not all be read so early);
    close it otherwise."""
    global _ahead
    ahead, _ahead = _ahead, None
    if ahead is None:
        return
    forkservers, started_with = ahead
    if started_with == preload:
        # The core group's registry, which its popen gateways fork from.
        call_blocking(group._group._forkservers.adopt, forkservers)
    run_blocking(forkservers.close)  # what it did not take


async def _close_ahead() -> None:
    if _ahead is not None:
        await _ahead[0].close()


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


def plugins_preloadable(config: pytest.Config, args: Sequence[str] | None = None) -> bool:
    """Whether the fork server may import the installed plugins ahead, as
    each worker's pytest would (:mod:`asyncgw._xdist_preload`): only when
    the session rewrites assertions with pytest's defaults, loads plugins
    from entry points and blocks none of them. Before pytest has parsed
    the command line, ``args`` (all of it) tells what it will block."""
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    if args is None:
        mode = config.getoption("assertmode", "rewrite")
        blocked: set[str] = set()
    else:
        mode = getattr(config.known_args_namespace, "assertmode", "rewrite")
        blocked = {
            value[3:]
            for option, value in zip(["", *args], args, strict=False)
            if option == "-p" and value.startswith("no:")
        } | {arg[5:] for arg in args if arg.startswith("-pno:")}
        if "--disable-plugin-autoload" in args:
            return False
    if mode != "rewrite" or config.getini("enable_assertion_pass_hook"):
        return False
    from importlib.metadata import entry_points

    manager = config.pluginmanager
    return not any(
        manager.is_blocked(entry.name) or entry.name in blocked
        for entry in entry_points(group="pytest11")
    )
