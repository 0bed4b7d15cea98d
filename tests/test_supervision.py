"""Supervision: a gateway's death is an event (callback and awaitable) with
its cause, exit status or signal and last stderr lines; a group restarts
dead members with the same spec and id, within a limit, after a back-off,
and never once it terminates."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

import asyncgw
import asyncgw.sync
from asyncgw import Death, RestartPolicy

from .conftest import wait_gone

pytestmark = pytest.mark.anyio

#: Generous bounds for events that come within milliseconds.
WAIT = 10.0

DIE_LOUDLY = """
import sys
sys.stderr.write("about to die\\n")
sys.stderr.flush()
channel.send("ready")
"""


async def kill_from_outside(gateway: asyncgw.Gateway) -> None:
    """SIGKILL the worker once it has written its last words to stderr."""
    await gateway.remote_exec(DIE_LOUDLY).receive()
    assert gateway.remote_pid is not None
    os.kill(gateway.remote_pid, signal.SIGKILL)


async def test_killed_gateway_reports_its_signal_and_stderr() -> None:
    async with asyncgw.Group() as group:
        gateway = await group.makegateway()
        seen: list[Death] = []
        gateway.on_death(seen.append)
        assert gateway.death is None
        await kill_from_outside(gateway)
        with anyio.fail_after(WAIT):
            death = await gateway.died()
        assert death.gateway_id == gateway.id == "gw0"
        assert death.spec == "popen"
        assert death.signal == signal.SIGKILL and death.signal_name == "SIGKILL"
        assert death.exit_status is None
        assert death.cause == "killed by SIGKILL"
        assert "about to die" in death.stderr_tail
        assert not death.expected and not death.restarting and not death.gave_up
        assert abs(death.time - time.time()) < WAIT
        assert seen == [death] and gateway.death is death
        with pytest.raises(asyncgw.GatewayLost):
            gateway.remote_exec("pass")


async def test_exit_status() -> None:
    async with asyncgw.Group() as group:
        gateway = await group.makegateway()
        gateway.remote_exec("import os; os._exit(3)")
        with anyio.fail_after(WAIT):
            death = await gateway.died()
        assert death.exit_status == 3 and death.signal is None
        assert death.cause == "exited with status 3"
        assert not death.expected


async def test_planned_ends_are_expected() -> None:
    deaths: list[Death] = []
    async with asyncgw.Group(restart=RestartPolicy(backoff=0)) as group:
        group.on_death(deaths.append)
        exiting, killed, terminated = await group.makegateways(["popen"] * 3)
        await exiting.exit()
        assert exiting.death is not None  # reported once exit returns
        assert exiting.death.expected and exiting.death.exit_status == 0
        assert exiting.death.cause == "asked to exit (exited)"
        await killed.kill()
        assert killed.death is not None and killed.death.expected
        assert killed.death.cause.startswith("killed on request (killed by SIG")
    assert terminated.death is not None and terminated.death.expected
    assert [death.gateway_id for death in deaths] == ["gw0", "gw1", "gw2"]
    assert not any(death.restarting for death in deaths)


async def test_callback_and_awaitable_fire_once() -> None:
    async with asyncgw.Group() as group:
        gateway = await group.makegateway()
        calls: list[Death] = []
        group_calls: list[Death] = []
        gateway.on_death(calls.append)
        group.on_death(group_calls.append)
        waiters = [asyncio.ensure_future(gateway.died()) for _ in range(2)]
        await kill_from_outside(gateway)
        with anyio.fail_after(WAIT):
            first, second = await asyncio.gather(*waiters)
        assert first is second is gateway.death
        await gateway.exit()  # ending it again reports nothing more
        late: asyncio.Future[Death] = asyncio.get_running_loop().create_future()
        gateway.on_death(late.set_result)  # registered after the death: called once
        with anyio.fail_after(WAIT):
            assert await late is first
    assert calls == [first] and group_calls == [first]


async def test_callback_errors_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken(death: Death) -> None:
        raise RuntimeError("broken callback")

    async with asyncgw.Group() as group:
        gateway = await group.makegateway()
        gateway.on_death(broken)
        with caplog.at_level(logging.ERROR, logger="asyncgw"):
            await gateway.exit()
    assert "broken callback" in caplog.text


async def test_restart_keeps_the_id_after_the_backoff() -> None:
    policy = RestartPolicy(max_restarts=2, backoff=0.2)
    async with asyncgw.Group(restart=policy) as group:
        restarts: asyncio.Queue[tuple[asyncgw.Gateway, Death, float]] = asyncio.Queue()
        group.on_restart(lambda gw, death: restarts.put_nowait((gw, death, time.time())))
        await group.makegateway()  # gw0, which stays
        old = await group.makegateway()
        old_pid = old.remote_pid
        for n in range(2):  # back-off doubles: 0.2 s, then 0.4 s
            await kill_from_outside(group["gw1"])
            with anyio.fail_after(WAIT):
                new, death, when = await restarts.get()
            assert death.restarting and death.restarts == n
            assert when - death.time >= policy.delay(n) == 0.2 * 2**n
            assert new.id == "gw1" and group["gw1"] is new and group[1] is new
            assert new.remote_pid != old_pid
            assert (await new.remote_info()).pid == new.remote_pid
            assert await new.remote_exec("channel.send(6 * 7)").receive() == 42
        assert old.death is not None and not old.is_alive  # the old object stays dead
        with pytest.raises(asyncgw.GatewayLost):
            old.remote_exec("pass")
        assert [gw.id for gw in group] == ["gw0", "gw1"]


async def test_restart_limit() -> None:
    async with asyncgw.Group(restart=RestartPolicy(max_restarts=1, backoff=0)) as group:
        restarted: list[asyncgw.Gateway] = []
        back = asyncio.Event()

        def on_restart(gateway: asyncgw.Gateway, death: Death) -> None:
            restarted.append(gateway)
            back.set()

        group.on_restart(on_restart)
        first = await group.makegateway()
        await kill_from_outside(first)
        with anyio.fail_after(WAIT):
            assert (await first.died()).restarting
            await back.wait()
        second = group["gw0"]
        await kill_from_outside(second)
        with anyio.fail_after(WAIT):
            death = await second.died()
        assert death.gave_up and not death.restarting and death.restarts == 1
        assert "gave up after 1 restarts" in str(death)
        assert group["gw0"] is second and not group._supervisor._pending
    assert restarted == [second]


async def test_no_restart_once_terminated() -> None:
    async with asyncgw.Group(restart=RestartPolicy(backoff=30)) as group:
        restarted: list[asyncgw.Gateway] = []
        group.on_restart(lambda gw, death: restarted.append(gw))
        gateway = await group.makegateway()
        await kill_from_outside(gateway)
        with anyio.fail_after(WAIT):
            assert (await gateway.died()).restarting
            await group.terminate()  # does not wait out the back-off
    assert not restarted and not len(group)


async def test_terminating_cancels_a_restart_under_way() -> None:
    async with asyncgw.Group(restart=RestartPolicy(backoff=0)) as group:
        gateway = await group.makegateway()
        await kill_from_outside(gateway)
        with anyio.fail_after(WAIT):
            assert (await gateway.died()).restarting
            await asyncio.sleep(0)  # the restart task is starting its gateway
            await group.terminate()
    assert not len(group)  # and the autouse fixture finds no child left


def test_blocking_facade() -> None:
    group = asyncgw.sync.Group(restart=1)
    try:
        deaths: list[Death] = []
        threads: list[str] = []
        called, restarted = threading.Event(), threading.Event()
        gateway = group.makegateway()

        def on_death(death: Death) -> None:
            threads.append(threading.current_thread().name)
            deaths.append(death)
            called.set()

        gateway.on_death(on_death)
        group.on_restart(lambda gw, death: restarted.set())
        gateway.remote_exec(DIE_LOUDLY).receive()
        os.kill(gateway._gateway.remote_pid or 0, signal.SIGKILL)
        death = gateway.died(timeout=WAIT)
        assert death.signal == signal.SIGKILL and death.restarting
        assert restarted.wait(WAIT) and called.wait(WAIT)
        assert group["gw0"] is not gateway and group["gw0"].remote_exec("channel.send(1)").receive()
        assert deaths == [death] and threads == ["asyncgw-supervision"]
    finally:
        group.terminate(timeout=2.0)


async def test_death_over_every_transport(gateway: asyncgw.Gateway) -> None:
    gateway.remote_exec("import os; os._exit(3)")
    with anyio.fail_after(WAIT):
        death = await gateway.died()
    assert not death.expected and death.signal is None
    if gateway.spec.socket:  # a socket tells no exit status
        assert death.exit_status is None
        assert death.cause == "connection lost: the socket connection closed"
    else:
        assert death.exit_status == 3 and death.cause == "exited with status 3"


def test_example() -> None:
    script = Path(__file__).parent.parent / "examples" / "supervision.py"
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "signal SIGKILL, last stderr line 'worker: giving up'" in proc.stdout
    assert "is group['worker']: True" in proc.stdout
    assert "the new worker answers: 42" in proc.stdout
    assert "planned end: gateway 'worker' (popen//id=worker): asked to exit" in proc.stdout
    assert "restarted (restart 1 of 2) after: killed by SIGKILL" in proc.stderr


async def test_forked_workers() -> None:
    """The fork server reports its workers' statuses; once it is gone, the
    kernel tells that a worker ended, not how (no false signal then)."""
    async with asyncgw.Group() as group:
        first, second = await group.makegateways(["popen"] * 2)
        server_pid = await first.remote_exec("import os; channel.send(os.getppid())").receive()
        assert server_pid != os.getpid()  # forked
        await kill_from_outside(first)
        with anyio.fail_after(WAIT):
            death = await first.died()
        assert death.signal == signal.SIGKILL and "about to die" in death.stderr_tail
        os.kill(server_pid, signal.SIGKILL)
        await wait_gone([server_pid])
        await kill_from_outside(second)
        with anyio.fail_after(WAIT):
            death = await second.died()
        assert death.signal is None and death.exit_status is None
        assert death.cause.startswith("connection lost: ")


def test_restart_policy() -> None:
    policy = RestartPolicy(backoff=0.5, max_backoff=3.0)
    assert [policy.delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert asyncgw.Group(restart=2)._supervisor.policy == RestartPolicy(max_restarts=2)
    assert asyncgw.Group(restart=0)._supervisor.policy is None
    assert asyncgw.Group()._supervisor.policy is None
    with pytest.raises(ValueError, match="negative"):
        RestartPolicy(backoff=-1)
    with pytest.raises(TypeError):
        asyncgw.Group(restart="3")  # type: ignore[arg-type]
