"""The blocking ``RSync`` of :mod:`asyncgw.sync`, execnet's class.

Made as the rest of the facade is: :meth:`RSync.send` runs the async
:class:`asyncgw.files.RSync` on the facade's loop thread with
``run_blocking``. What it adds is the translation of user code: the hooks a
subclass overrides (``filter``, ``_report_send_file``) and the callbacks
(``callback``, ``finishedcallback``, ``progress``) are called with facade
objects (the facade ``Gateway`` and ``Channel``), never on the loop thread,
so they may block and use the blocking API: ``filter`` from the thread
that walks the tree, the others through ``asyncio.to_thread``, the
transfer waiting for each call to return.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from .. import _channel, _gateway
from .._loopthread import run_blocking
from ..files import rsync as _rsync
from .channel import Channel, present
from .gateway import Gateway, present_gateway

__all__ = ["RSync"]


class _Bridge(_rsync.RSync):
    """The async RSync with its hooks handed to a blocking ``RSync``."""

    def __init__(self, owner: RSync) -> None:
        callback: Any = owner._callback  # called with facade channels by _run_hook
        super().__init__(owner._sourcedir, callback, owner._verbose)
        self._owner = owner

    def filter(self, path: str) -> bool:
        return bool(self._owner.filter(path))  # already on a worker thread

    def _report_send_file(self, gateway: Any, modified_rel_path: str) -> None:
        self._owner._report_send_file(gateway, modified_rel_path)

    async def _run_hook(self, hook: Callable[..., object], *args: Any) -> None:
        await asyncio.to_thread(hook, *map(_facade_object, args))


def _facade_object(value: Any) -> Any:
    if isinstance(value, _gateway.Gateway):
        return present_gateway(value)
    if isinstance(value, _channel.Channel):
        return present(value)
    return value


class RSync:
    """Send a directory tree to one or more gateways (execnet's ``RSync``).

    ::

        rsync = RSync(sourcedir)
        rsync.add_target(gateway, "/tmp/dest", delete=True)
        rsync.send()

    Only what changed travels (size and mtime, then block hashes); modes,
    mtimes and symlinks are kept. See :class:`asyncgw.files.RSync` for the
    details; everything said there holds here, except that the hooks and
    callbacks get facade objects and run off the loop thread.

    :param sourcedir: the directory (or single file) to send.
    :param callback: ``callback(command, size, channel)``: ``("list",
        total, channel)`` once a target has listed what it needs, ``("ack",
        size, channel)`` per file written there.
    :param verbose: whether the default :meth:`_report_send_file` prints.
    """

    def __init__(
        self,
        sourcedir: str | os.PathLike[str],
        callback: Callable[[str, int, Channel], object] | None = None,
        verbose: bool = True,
    ) -> None:
        self._sourcedir = _rsync.checked_source(sourcedir, callback)
        self._verbose = verbose
        self._callback = callback
        self._targets: list[tuple[_gateway.Gateway, str, Callable[[], object] | None, bool]] = []

    def filter(self, path: str) -> bool:
        """Whether to send ``path`` (under the source directory); override
        to leave things out. Called from a worker thread."""
        return True

    def _report_send_file(self, gateway: Gateway, modified_rel_path: str) -> None:
        """Called before a file goes to ``gateway``; prints when verbose."""
        if self._verbose:
            print(f"{gateway} <= {modified_rel_path}")

    def add_target(
        self,
        gateway: Gateway,
        destdir: str | os.PathLike[str],
        finishedcallback: Callable[[], object] | None = None,
        delete: bool = False,
    ) -> None:
        """Send the tree to ``destdir`` on ``gateway`` at the next
        :meth:`send`; ``finishedcallback()`` once that target is complete;
        with ``delete``, remove what the source does not have."""
        core = gateway._gateway if isinstance(gateway, Gateway) else gateway
        if not isinstance(core, _gateway.Gateway):
            raise TypeError(f"add_target takes a Gateway, not {type(gateway).__name__}")
        self._targets.append((core, os.fspath(destdir), finishedcallback, delete))

    def send(
        self, raises: bool = True, progress: Callable[[str, str, int, int], object] | None = None
    ) -> None:
        """Send the tree to every target added since the last ``send`` and
        block until all are complete (see :meth:`asyncgw.files.RSync.send`).

        :raises OSError: with no targets (unless ``raises`` is false).
        :raises RemoteError: if a target failed.
        """
        targets, self._targets = self._targets, []
        bridge = _Bridge(self)  # made now: a subclass may have changed our fields
        for core, destdir, finished, delete in targets:
            bridge.add_target(core, destdir, finished, delete)
        run_blocking(bridge.send, raises, progress)
