"""Group: a set of gateways started and terminated together, in parallel.

Ids are unique within a group: ``gw0, gw1, ...`` unless a spec names one.
An id is reserved from the moment a gateway starts opening, so concurrent
``makegateway`` calls can never produce the same id twice.

The group does not start interpreters itself: it hands each spec to
:func:`._gateway.open_gateway` with an :class:`~asyncgw.transports.OpenContext`
carrying its fork servers (``transports.forkserver.ForkServers``, the
popen transport's), which it only makes, tells of a batch, and closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType, TracebackType
from typing import Any

from . import _fdlimit
from ._channel import MultiChannel
from ._errors import SpecError
from ._gateway import Gateway, open_gateway
from ._spec import XSpec
from ._supervision import Death, GroupSupervisor, RestartPolicy
from ._tasks import run_all
from .transports import OpenContext
from .transports.forkserver import ForkServers

__all__ = ["Group", "default_group", "makegateway"]

SpecLike = XSpec | str

log = logging.getLogger("asyncgw")


class Group:
    """Gateways managed together.

    ``async with Group(["popen"] * 2) as group:`` starts the listed gateways
    on entry and terminates every member on exit (also on an exception or a
    cancellation), waiting at most ``exit_timeout`` seconds for running
    remote code before killing.

    :param preload: modules the group's fork servers import before they
        fork popen workers (a failed import is reported on stderr and
        skipped); workers then start with those modules imported.
    :param execnet_alias: remote code finds the worker's execnet API under
        ``import execnet`` (the blocking facade sets this when ``execnet``
        is aliased to :mod:`asyncgw.sync` here).
    :param execmodel: ``thread`` or ``main_thread_only``, for members whose
        spec names no ``execmodel``.
    :param forward_logs: members forward their logs, warnings, thread
        exceptions and output here (spec key ``forward_logs``).
    :param forward_imports: top-level names members' imports may fetch from
        here (spec key ``forward_imports=a,b``).
    :param restart: restart members that die unexpectedly, with the same
        spec and id: a :class:`RestartPolicy`, or its ``max_restarts`` alone
        (see :mod:`asyncgw._supervision`). None: never.
    """

    def __init__(
        self,
        specs: Iterable[SpecLike] = (),
        *,
        defaultspec: str = "popen",
        exit_timeout: float = 5.0,
        preload: Iterable[str] = (),
        execnet_alias: bool = False,
        execmodel: str = "thread",
        forward_logs: bool = False,
        forward_imports: Iterable[str] = (),
        restart: RestartPolicy | int | None = None,
    ) -> None:
        self._initial = list(specs)
        self._gateways: list[Gateway] = []
        self._reserved: set[str] = set()
        self._autoidcounter = 0
        self.defaultspec = defaultspec
        self.exit_timeout = exit_timeout
        #: Modules the group's fork servers import before forking workers,
        #: so that each worker starts with them imported (as
        #: multiprocessing's forkserver preload).
        self.preload = list(preload)
        #: Whether remote code of new members finds the worker's execnet API
        #: under ``import execnet`` (see :mod:`asyncgw.sync`).
        self.execnet_alias = execnet_alias
        #: The execmodel of members whose spec names none (execnet's
        #: ``remote_execmodel``); set on their XSpec, as execnet does.
        self.execmodel = execmodel
        #: Defaults for members whose spec does not say: forward their logs
        #: here; let their imports of these names fetch modules from here.
        self.forward_logs = forward_logs
        self.forward_imports = list(forward_imports)
        # The popen transport's fork servers for this group's members.
        self._forkservers = ForkServers()
        self._context = OpenContext(group=self, forkservers=self._forkservers)
        self._supervisor = GroupSupervisor(self, restart, self._open_replacement)

    def __repr__(self) -> str:
        return f"<Group {[gw.id for gw in self._gateways]!r}>"

    def __len__(self) -> int:
        return len(self._gateways)

    def __iter__(self) -> Iterator[Gateway]:
        return iter(list(self._gateways))

    def __contains__(self, key: object) -> bool:
        if isinstance(key, Gateway):
            return key in self._gateways
        return any(gw.id == key for gw in self._gateways)

    def __getitem__(self, key: int | str) -> Gateway:
        if isinstance(key, int):
            return self._gateways[key]
        for gateway in self._gateways:
            if gateway.id == key:
                return gateway
        raise KeyError(key)

    async def __aenter__(self) -> Group:
        if self._initial:
            specs, self._initial = self._initial, []
            await self.makegateways(specs)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.terminate(self.exit_timeout)

    def allocate_id(self, spec: XSpec) -> None:
        """Give ``spec`` the next free automatic id, if it has none."""
        if spec.id is not None:
            return
        taken = self._reserved | {gw.id for gw in self._gateways}
        while f"gw{self._autoidcounter}" in taken:
            self._autoidcounter += 1
        spec.id = f"gw{self._autoidcounter}"
        self._autoidcounter += 1

    async def makegateway(self, spec: SpecLike | None = None) -> Gateway:
        """Start a gateway for ``spec`` (default: :attr:`defaultspec`).

        Cancelling kills the half-started interpreter; nothing is left.

        :raises SpecError: for a malformed spec or an id already in use.
        :raises GatewayError: if the gateway cannot be started (also when
            the file descriptor limit leaves no room: see :mod:`._fdlimit`).
        """
        reserved = self._reserve(spec)
        try:
            _fdlimit.ensure_room([reserved])
            gateway = await self._open(reserved)
        except BaseException as exc:
            self._reserved.discard(str(reserved.id))
            if (error := _fdlimit.exhausted_error(exc, [reserved])) is not None:
                raise error from exc
            raise
        self._gateways.append(gateway)
        return gateway

    async def makegateways(self, specs: Iterable[SpecLike]) -> list[Gateway]:
        """Start gateways for all ``specs`` concurrently; all or nothing: if
        one fails, the others are killed and the first error is raised.
        Members join the group in the order of ``specs``, except that a
        gateway named by a ``via=`` key joins (and starts) before those that
        go through it. Cancelling kills every gateway started so far.

        The soft file descriptor limit is raised if the gateways need it
        (see :mod:`._fdlimit`); if they do not fit under the hard limit, a
        :class:`GatewayError` says how many fit, and nothing is started.
        """
        reserved: list[XSpec] = []
        try:
            for spec in specs:
                reserved.append(self._reserve(spec))  # noqa: PERF401 - keeps those done on error
            _fdlimit.ensure_room(reserved)
        except BaseException:
            self._reserved.difference_update(str(spec.id) for spec in reserved)
            raise
        forkservers = self._forkservers.start_for(reserved, self.preload)
        started: list[Gateway] = []

        async def make(spec: XSpec) -> Gateway:
            gateway = await self._open(spec)
            started.append(gateway)
            return gateway

        try:
            for wave in _proxies_first(reserved):  # a via gateway needs its proxy in
                self._gateways.extend(await run_all(make(spec) for spec in wave))
        except BaseException as exc:
            self._reserved.difference_update(str(spec.id) for spec in reserved)
            await run_all(gateway.kill() for gateway in started)
            await self._forkservers.close(forkservers)
            if (error := _fdlimit.exhausted_error(exc, reserved)) is not None:
                raise error from exc  # one clear error, not the first of many
            raise
        order = [spec.id for spec in reserved]
        return sorted(started, key=lambda gateway: order.index(gateway.id))

    def _reserve(self, spec: SpecLike | None) -> XSpec:
        """Parse ``spec``, give it an id, and hold that id until it opens."""
        if not spec:  # None or "" (as execnet): the default
            spec = self.defaultspec
        if not isinstance(spec, XSpec):
            spec = XSpec(spec)
        if spec.execmodel is None:
            spec.execmodel = self.execmodel
        spec.validate()
        self.allocate_id(spec)
        assert spec.id is not None
        if spec.id in self._reserved or spec.id in self:
            raise SpecError(f"gateway id {spec.id!r} is already in use in {self!r}")
        self._reserved.add(spec.id)
        return spec

    async def _open(self, spec: XSpec) -> Gateway:
        assert spec.id is not None
        try:
            return await open_gateway(spec, self, context=self._context)
        finally:
            self._reserved.discard(spec.id)

    async def _open_replacement(self, spec: XSpec, group: Group) -> Gateway:
        """A restarted member's gateway (the supervisor's opener)."""
        return await open_gateway(spec, group, context=self._context)

    def remote_exec(
        self, source: str | ModuleType | Callable[..., Any], **kwargs: Any
    ) -> MultiChannel:
        """``remote_exec`` on every member; their channels as one."""
        return MultiChannel([gw.remote_exec(source, **kwargs) for gw in self._gateways])

    async def terminate(self, timeout: float | None = None) -> None:
        """Ask every member to exit, in parallel; kill whoever has not exited
        after ``timeout`` seconds (None: wait as long as remote code runs).
        Returns when every interpreter is gone.

        Cancelling kills the remaining interpreters at once, then re-raises.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            await self._supervisor.stop()  # no restarts while (or once) ending
            for wave in _proxies_last(list(self._gateways)):
                left = None if deadline is None else max(0.0, deadline - loop.time())
                await run_all(gateway.exit(left) for gateway in wave)
        finally:
            self._supervisor.resume()
            await self._forkservers.close()

    def _remove(self, gateway: Gateway) -> None:
        if gateway in self._gateways:
            self._gateways.remove(gateway)

    def _replace(self, old: Gateway, new: Gateway) -> bool:
        """Put ``new`` in ``old``'s place; False if ``old`` has left."""
        if old not in self._gateways:
            return False
        self._gateways[self._gateways.index(old)] = new
        return True

    # -- supervision (asyncgw/_supervision.py)

    def on_death(self, callback: Callable[[Death], object]) -> None:
        """Call ``callback(death)`` on the event loop whenever a member ends
        (planned ends included: see :attr:`Death.expected`). An exception in
        a callback is logged, not raised."""
        self._supervisor.death_callbacks.append(callback)

    def on_restart(self, callback: Callable[[Gateway, Death], object]) -> None:
        """Call ``callback(gateway, death)`` on the event loop when the
        restart policy has replaced a dead member: ``gateway`` is the new
        member, ``death`` how the old one ended. Restarts are also logged
        (WARNING, logger ``asyncgw.group``)."""
        self._supervisor.restart_callbacks.append(callback)


def _proxies_last(gateways: list[Gateway]) -> list[list[Gateway]]:
    """Waves of gateways to end in turn: none is a proxy (``via=``,
    ``installvia=``) of a
    gateway in the same or a later wave, so traffic is never cut under a
    gateway that is still exiting."""
    waves = []
    while gateways:
        proxies = {gw.spec.via or gw.spec.installvia for gw in gateways}
        wave = [gw for gw in gateways if gw.id not in proxies] or gateways
        waves.append(wave)
        gateways = [gw for gw in gateways if gw not in wave]
    return waves


def _proxies_first(specs: list[XSpec]) -> list[list[XSpec]]:
    """Waves of specs to start in turn: each ``via=`` (``installvia=``)
    target comes first."""
    waves = []
    pending = list(specs)
    while pending:
        ids = {spec.id for spec in pending}
        wave = [
            spec for spec in pending if spec.via not in ids and spec.installvia not in ids
        ] or pending
        waves.append(wave)
        pending = [spec for spec in pending if spec not in wave]
    return waves


#: The group of gateways made by the module-level :func:`makegateway`.
default_group = Group()


async def makegateway(spec: SpecLike | None = None) -> Gateway:
    """Start a gateway in :data:`default_group`."""
    return await default_group.makegateway(spec)
