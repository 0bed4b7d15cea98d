"""The blocking facade's groups: :class:`Group` of :mod:`asyncgw.sync`,
with execnet's module-level :data:`default_group`, :func:`makegateway` and
:func:`set_execmodel`.

A facade group owns a core :class:`asyncgw.Group` and runs it on the
facade's loop thread; its members are facade gateways. Groups still open
when the interpreter exits are terminated by the loop thread's shutdown
hook, in parallel, each member given :data:`EXIT_TIMEOUT` seconds.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import Death, RestartPolicy, _group
from .._loopthread import loop_thread
from .._loopthread import run_blocking as _run
from .._spec import XSpec
from .._tasks import run_all
from ..remote.execmodel import ExecModel, get_execmodel
from .channel import MultiChannel
from .gateway import Gateway, in_thread, present_gateway

__all__ = ["EXIT_TIMEOUT", "Group", "default_group", "makegateway", "set_execmodel"]

log = logging.getLogger("asyncgw")

#: The facade's module name: ``execnet`` is it once aliased (:mod:`asyncgw.compat`).
FACADE = "asyncgw.sync"

_live_groups: weakref.WeakSet[Group] = weakref.WeakSet()
#: Seconds groups left open at interpreter exit get before being killed.
EXIT_TIMEOUT = 1.0


async def _terminate_live_groups() -> None:
    await run_all(group._group.terminate(EXIT_TIMEOUT) for group in list(_live_groups))


class Group:
    """Gateways managed together, execnet style: ``Group(["popen"] * 2)``
    starts both members (in parallel) before returning. ``restart``,
    ``forward_logs`` and ``forward_imports`` are the async
    :class:`asyncgw.Group`'s."""

    def __init__(
        self,
        xspecs: Iterable[XSpec | str] = (),
        execmodel: str = "thread",
        *,
        restart: RestartPolicy | int | None = None,
        forward_logs: bool = False,
        forward_imports: Iterable[str] = (),
    ) -> None:
        self._group = _group.Group(
            restart=restart, forward_logs=forward_logs, forward_imports=forward_imports
        )
        # A restarted member's facade belongs to this group, as the first.
        self._group.on_restart(lambda gateway, death: Gateway(gateway, self))
        self._prestarted: dict[str, Gateway] = {}
        self.set_execmodel(execmodel)
        with _live_lock:
            if not _live_groups and _terminate_live_groups not in loop_thread.shutdown_hooks:
                loop_thread.shutdown_hooks.append(_terminate_live_groups)
            _live_groups.add(self)
        specs = list(xspecs)
        if specs:
            self.makegateways(specs)

    @property
    def execmodel(self) -> ExecModel:
        """The local execution model (threads either way here)."""
        return self._execmodel

    @property
    def remote_execmodel(self) -> ExecModel:
        """The execmodel of members whose spec names none."""
        return self._remote_execmodel

    def set_execmodel(self, execmodel: str, remote_execmodel: str | None = None) -> None:
        """Choose the execution models, before any member exists:
        ``thread`` or ``main_thread_only`` (remote code on the worker's main
        thread); ``remote_execmodel`` defaults to ``execmodel``.

        :raises ValueError: for another model, or once the group has members.
        """
        if len(self._group):
            raise ValueError("can not set execution models if gateways have been created already")
        self._execmodel = get_execmodel(execmodel)
        self._remote_execmodel = get_execmodel(remote_execmodel or execmodel)
        self._group.execmodel = self._remote_execmodel.backend

    @property
    def defaultspec(self) -> str:
        """The spec of :meth:`makegateway` without one (``popen``)."""
        return self._group.defaultspec

    @defaultspec.setter
    def defaultspec(self, spec: str) -> None:
        self._group.defaultspec = spec

    def __repr__(self) -> str:
        return repr(self._group)

    def __len__(self) -> int:
        return len(self._group)

    def __iter__(self) -> Iterator[Gateway]:
        return iter([present_gateway(gw) for gw in self._group])

    def __contains__(self, key: object) -> bool:
        if isinstance(key, Gateway):
            key = key._gateway
        return key in self._group

    def __getitem__(self, key: int | str) -> Gateway:
        return present_gateway(self._group[key])

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate(self._group.exit_timeout)

    def allocate_id(self, spec: XSpec) -> None:
        """Give ``spec`` the next free ``gwN`` id if it has none."""
        self._group.allocate_id(spec)

    def _sync_options(self) -> None:
        # Remote code finds execnet where ours is execnet (pytest-xdist's
        # worker side imports it): see asyncgw.compat.
        self._group.execnet_alias = sys.modules.get("execnet") is sys.modules[FACADE]

    def makegateway(self, spec: XSpec | str | None = None) -> Gateway:
        """Start a member for ``spec`` (default: :attr:`defaultspec`).

        :raises SpecError: (a ``ValueError``) for a spec no gateway is made from.
        :raises HostNotFound: if the interpreter or host cannot be reached.
        """
        if isinstance(spec, XSpec) and spec.id is not None:
            started = self._prestarted.pop(spec.id, None)
            if started is not None and started._gateway.is_alive:
                return started
        self._sync_options()
        return Gateway(_run(self._group.makegateway, spec), self)

    def _prestart(self, specs: list[XSpec]) -> None:
        """Start the members of ``specs`` (which have ids) in parallel now,
        for callers that will ask for them one by one (pytest-xdist): a later
        ``makegateway`` of one of these specs returns its gateway. If any
        fails to start, none is kept, and ``makegateway`` reports its error."""
        if any(spec.id is None for spec in specs):
            return
        try:
            gateways = self.makegateways(specs)
        except Exception as exc:  # each makegateway will tell its own error
            log.debug("starting %d gateways at once failed (%s)", len(specs), exc)
            return
        self._prestarted.update((gateway.id, gateway) for gateway in gateways)

    def makegateways(self, specs: Iterable[XSpec | str]) -> list[Gateway]:
        """Start members for all ``specs`` in parallel; all or nothing."""
        self._sync_options()
        return [Gateway(gateway, self) for gateway in _run(self._group.makegateways, list(specs))]

    def remote_exec(self, source: Any, **kwargs: Any) -> MultiChannel:
        """Start ``source`` on every member; their channels as one."""
        return MultiChannel(gateway.remote_exec(source, **kwargs) for gateway in self)

    def terminate(self, timeout: float | None = None) -> None:
        """Exit all members in parallel; kill those still there after
        ``timeout`` seconds."""
        _run(self._group.terminate, timeout)

    def on_death(self, callback: Callable[[Death], object]) -> None:
        """Call ``callback(death)`` in a thread of its own whenever a member
        ends (see :meth:`asyncgw.Group.on_death`)."""
        self._group.on_death(in_thread(callback))

    def on_restart(self, callback: Callable[[Gateway, Death], object]) -> None:
        """Call ``callback(gateway, death)`` in a thread of its own when the
        restart policy has replaced a dead member with ``gateway``."""
        thread = in_thread(callback)
        self._group.on_restart(lambda gateway, death: thread(present_gateway(gateway), death))


_live_lock = threading.Lock()

#: The group of the module-level :func:`makegateway`.
default_group = Group()


def makegateway(spec: XSpec | str | None = None) -> Gateway:
    """A gateway in :data:`default_group`."""
    return default_group.makegateway(spec)


def set_execmodel(execmodel: str, remote_execmodel: str | None = None) -> None:
    """Set the execution models of :data:`default_group` (see
    :meth:`Group.set_execmodel`)."""
    default_group.set_execmodel(execmodel, remote_execmodel)
