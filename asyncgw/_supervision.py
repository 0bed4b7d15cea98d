"""Gateways' deaths as events, and groups that restart dead members.

A gateway's end — it exited, was killed, or its connection was lost,
planned or not — is reported once, as a :class:`Death`: to the gateway's
callbacks (``Gateway.on_death``), to whoever awaits ``Gateway.died()``, and
then to its group's callbacks (``Group.on_death``). The report waits, a
bounded while (:data:`REAP_WAIT`), for the transport to close, so that the
exit status and the last stderr lines are known when it is made.

A group with a :class:`RestartPolicy` starts a new gateway for a member
that died unexpectedly — same spec, same id, same place in the group —
after a back-off that doubles with each restart of that id, and gives up
past the policy's limit. The dead gateway object stays dead.

Invariants: a death is reported at most once, and only for a gateway that
started (a failed start raises instead); a planned end (``exit``, ``kill``,
``Group.terminate``) is never restarted; nothing is restarted while or once
the group terminates, and terminating cancels pending restarts.

Part of the core (``_gateway`` and ``_group`` use it): it imports no layer.
The group hands its supervisor the function that opens a gateway, so this
module needs no import of ``_gateway`` at run time.
"""

from __future__ import annotations

import asyncio
import logging
import signal as signals
import time as clock
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._gateway import Gateway
    from ._group import Group
    from ._spec import XSpec

    #: Opens a gateway for a spec in a group (``_gateway.open_gateway``).
    Opener = Callable[[XSpec, Group], Awaitable[Gateway]]

__all__ = ["REAP_WAIT", "Death", "DeathWatch", "GroupSupervisor", "RestartPolicy"]

log = logging.getLogger("asyncgw.group")
callback_log = logging.getLogger("asyncgw")

#: Seconds a death report waits for the transport to close (the process to
#: be reaped) before it is made with what is known.
REAP_WAIT = 2.0


@dataclass(frozen=True)
class Death:
    """How a gateway ended: an event, reported once per gateway.

    :ivar gateway_id: the gateway's id (a restarted member keeps it).
    :ivar spec: the gateway's spec, as text.
    :ivar cause: what happened, in words: ``"killed by SIGKILL"``,
        ``"exited with status 3"``, ``"connection lost: ..."``; a planned
        end says so first (``"asked to exit (exited)"``).
    :ivar exit_status: the interpreter's exit status, if it exited and the
        transport knows it (popen, cmd, via, ssh when the server reports it).
    :ivar signal: the number of the signal that killed it, if one did.
    :ivar stderr_tail: the last lines it wrote to stderr, where this side
        sees them (popen, cmd, ssh).
    :ivar expected: True if it was asked to end (``exit``, ``kill``,
        ``Group.terminate``); such ends are never restarted.
    :ivar time: when the end was noticed (``time.time()``).
    :ivar restarts: how many times the group had restarted this id before.
    :ivar restarting: the group's restart policy will start a new gateway
        with this id.
    :ivar gave_up: the policy would have restarted it, but its limit is
        reached.
    """

    gateway_id: str
    spec: str
    cause: str
    exit_status: int | None = None
    signal: int | None = None
    stderr_tail: tuple[str, ...] = ()
    expected: bool = False
    time: float = 0.0
    restarts: int = 0
    restarting: bool = False
    gave_up: bool = False

    @property
    def signal_name(self) -> str | None:
        """``"SIGKILL"`` and the like, if a signal killed it."""
        return None if self.signal is None else _signal_name(self.signal)

    def __str__(self) -> str:
        text = f"gateway {self.gateway_id!r} ({self.spec}): {self.cause}"
        if self.restarting:
            text += f"; restarting (restart {self.restarts + 1})"
        elif self.gave_up:
            text += f"; not restarted: gave up after {self.restarts} restarts"
        return text


@dataclass(frozen=True)
class RestartPolicy:
    """How a :class:`~asyncgw.Group` restarts members that die unexpectedly.

    :param max_restarts: restarts of one id at most (start failures count);
        past it the group gives up on that id.
    :param backoff: seconds before the first restart of an id; doubled for
        each further restart of it.
    :param max_backoff: the longest wait between restarts.
    :param reset_after: a member that ran this many seconds before dying
        counts its restarts afresh (None: never).
    :raises ValueError: for a negative number.
    """

    max_restarts: int = 3
    backoff: float = 0.5
    max_backoff: float = 10.0
    reset_after: float | None = None

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError(f"{self!r}: restarts and delays cannot be negative")
        if self.reset_after is not None and self.reset_after < 0:
            raise ValueError(f"{self!r}: reset_after cannot be negative")

    def delay(self, restarts: int) -> float:
        """Seconds to wait before restarting an id restarted ``restarts``
        times already."""
        return float(min(self.backoff * 2 ** min(restarts, 64), self.max_backoff))


def restart_policy(restart: RestartPolicy | int | None) -> RestartPolicy | None:
    """``Group(restart=...)``: a policy, its ``max_restarts`` alone, True
    for the default policy, or None / False / 0 for none."""
    if restart is None or restart is False:
        return None
    if restart is True:
        return RestartPolicy()
    if isinstance(restart, RestartPolicy):
        return restart
    if isinstance(restart, int):
        return RestartPolicy(max_restarts=restart) if restart else None
    raise TypeError(f"restart must be a RestartPolicy or a number of restarts, not {restart!r}")


def _signal_name(signum: int) -> str:
    try:
        return signals.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _call_all(callbacks: list[Callable[..., object]], *args: object) -> None:
    for callback in list(callbacks):
        try:
            callback(*args)
        except Exception:
            callback_log.exception("supervision callback %r failed", callback)


class DeathWatch:
    """One gateway's death: noticed, reported once, awaited. Armed by
    ``open_gateway`` once the gateway has started."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self.death: Death | None = None
        #: How the end was asked for ("asked to exit", "killed on request").
        self.requested: str | None = None
        #: When the gateway was up (``time.monotonic()``), once armed.
        self.started: float | None = None
        self._callbacks: list[Callable[[Death], object]] = []
        self._future: asyncio.Future[Death] | None = None
        self._report: asyncio.Task[None] | None = None

    def arm(self) -> None:
        """Report the gateway's end from now on."""
        self.started = clock.monotonic()
        router = self._gateway._router
        if router.lost is not None:
            self._on_lost()
        else:
            router.lost_callbacks.append(self._on_lost)

    def add_callback(self, callback: Callable[[Death], object]) -> None:
        """Call ``callback(death)`` on the loop once the gateway has ended
        (soon, if it already has); an exception there is logged."""
        self._callbacks.append(callback)
        if self.death is not None:  # already reported: this one is called alone
            asyncio.get_running_loop().call_soon(_call_all, [callback], self.death)

    async def wait(self) -> Death:
        """Wait until the gateway has ended; how it did. Cancelling the
        wait leaves the watch as it is."""
        if self.death is not None:
            return self.death
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._future)

    async def settled(self) -> None:
        """Return once the death, if noticed, has been reported."""
        if self._report is not None:
            await asyncio.shield(self._report)

    def _on_lost(self) -> None:
        if self._report is not None:
            return
        # What we knew when the end came: asking afterwards changes nothing.
        noticed, requested = clock.time(), self.requested
        self._report = asyncio.get_running_loop().create_task(self._make(noticed, requested))

    async def _make(self, noticed: float, requested: str | None) -> None:
        gateway = self._gateway
        transport = gateway._transport
        if transport is not None:
            try:
                async with asyncio.timeout(REAP_WAIT):
                    await transport.wait_closed()
            except (TimeoutError, OSError) as exc:
                log.debug("gateway %r: no exit status after %ss (%r)", gateway.id, REAP_WAIT, exc)
        status = None if transport is None else transport.exit_status()
        exit_status, signum = status, None
        if status is not None and status < 0:  # subprocess's way to name a signal
            exit_status, signum = None, -status
        if signum is not None:
            what = f"killed by {_signal_name(signum)}"
        elif exit_status is not None:
            what = "exited" if exit_status == 0 else f"exited with status {exit_status}"
        else:
            what = f"connection lost: {gateway._router.lost_reason or 'unknown'}"
        death = Death(
            gateway_id=gateway.id,
            spec=str(gateway.spec),
            cause=f"{requested} ({what})" if requested else what,
            exit_status=exit_status,
            signal=signum,
            stderr_tail=tuple(transport.stderr_tail()) if transport is not None else (),
            expected=requested is not None,
            time=noticed,
        )
        group = gateway.group
        if group is not None:
            death = group._supervisor.judge(gateway, death)
        self.death = death
        if self._future is not None and not self._future.done():
            self._future.set_result(death)
        _call_all(self._callbacks, death)
        if group is not None:
            group._supervisor.reported(gateway, death)


class GroupSupervisor:
    """A group's death callbacks and restarts (``Group._supervisor``).
    Made without a running loop (the blocking facade makes groups in its
    callers' threads)."""

    def __init__(self, group: Group, restart: RestartPolicy | int | None, opener: Opener) -> None:
        self._group = group
        self._open = opener  # what starts a replacement
        self.policy = restart_policy(restart)
        self.death_callbacks: list[Callable[[Death], object]] = []
        self.restart_callbacks: list[Callable[[Gateway, Death], object]] = []
        self._restarts: dict[str, int] = {}  # id -> restarts so far (consecutive)
        self._pending: dict[str, asyncio.Task[None]] = {}  # id -> its restart
        self._stopped = False

    def judge(self, gateway: Gateway, death: Death) -> Death:
        """``death``, saying whether the policy restarts ``gateway``."""
        restarts = self._restarts.get(gateway.id, 0)
        policy = self.policy
        if (
            policy is None
            or death.expected
            or self._stopped
            or gateway not in self._group  # it left: nothing to restart
        ):
            return replace(death, restarts=restarts)
        started = gateway._watch.started
        if (
            policy.reset_after is not None
            and started is not None
            and clock.monotonic() - started >= policy.reset_after
        ):
            restarts = self._restarts[gateway.id] = 0
        if restarts >= policy.max_restarts:
            log.error("%s", replace(death, restarts=restarts, gave_up=True))
            return replace(death, restarts=restarts, gave_up=True)
        return replace(death, restarts=restarts, restarting=True)

    def reported(self, gateway: Gateway, death: Death) -> None:
        """Tell the group's callbacks; restart if ``death`` says so."""
        if not death.expected:
            log.info("%s", death)
        _call_all(self.death_callbacks, death)
        if death.restarting and not self._stopped:
            task = asyncio.get_running_loop().create_task(self._restart(gateway, death))
            self._pending[gateway.id] = task
            task.add_done_callback(lambda done: self._forget(gateway.id, done))

    def _forget(self, gateway_id: str, task: asyncio.Task[None]) -> None:
        if self._pending.get(gateway_id) is task:
            del self._pending[gateway_id]
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("restarting gateway %r failed", gateway_id, exc_info=error)

    async def _restart(self, old: Gateway, death: Death) -> None:
        assert self.policy is not None
        group, gateway_id = self._group, old.id
        while True:
            restarts = self._restarts.get(gateway_id, 0)
            self._restarts[gateway_id] = restarts + 1
            await asyncio.sleep(self.policy.delay(restarts))
            await self._proxy_restarted(old)
            if self._stopped or old not in group:
                return  # terminating, or the dead member was made to leave
            try:
                new = await self._open(old.spec, group)
            except Exception as exc:  # GatewayError, SpecError, OSError: counts as a try
                if restarts + 1 >= self.policy.max_restarts:
                    log.error(
                        "gateway %r (%s) not restarted: gave up after %d tries; last: %s",
                        gateway_id,
                        old.spec,
                        restarts + 1,
                        exc,
                    )
                    return
                log.warning("restarting gateway %r failed (%s); trying again", gateway_id, exc)
                continue
            break
        if self._stopped or not group._replace(old, new):
            await new.kill()  # the group ended or the member left meanwhile
            return
        log.warning(
            "gateway %r restarted (restart %d of %d) after: %s",
            gateway_id,
            restarts + 1,
            self.policy.max_restarts,
            death.cause,
        )
        _call_all(self.restart_callbacks, new, death)

    async def _proxy_restarted(self, old: Gateway) -> None:
        """Wait for the pending restart of the gateway ``old`` went through
        (``via=``, ``installvia=``), if any: it must be back first."""
        proxy = old.spec.via or old.spec.installvia
        task = self._pending.get(proxy) if proxy else None
        if task is not None:
            await asyncio.wait([task])  # our cancellation leaves it alone

    async def stop(self) -> None:
        """Restart nothing more; cancel pending restarts and wait for them
        (a half-started gateway is killed by its start's cancellation)."""
        self._stopped = True
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def resume(self) -> None:
        """Restart again (the group may get new members after terminating),
        counting afresh."""
        self._stopped = False
        self._restarts.clear()
