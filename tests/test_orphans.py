"""No orphans: a command the fleet runs through a gateway ends with the
gateway, however the gateway ends (issue 18, item 3).

Each test starts ``sleep 300`` in the background of a shell through a
gateway, so that both the shell and its child are at stake, then ends the
gateway one way — ``gw.kill()``, SIGTERM or SIGKILL to the worker, or the
link lost because the caller died — and checks with psutil, by pid, that
the shell and its child are gone. Over a popen gateway and over OpenSSH's
sshd on a loopback port (the worker then is sshd's child, not ours).

A lost link: for a popen gateway, the caller's end of the worker's pipes
closes when the caller dies; for an ssh gateway, the TCP connection does,
and sshd closes the worker's pipes. The caller is then a child process of
the test (a script below), SIGKILLed so that nothing of it cleans up.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import psutil
import pytest

import asyncgw
from asyncgw.fleet import Remote

from .conftest import wait_gone
from .test_sshd import Sshd, sshd  # noqa: F401 - the session's loopback sshd

pytestmark = pytest.mark.anyio

#: The shell's pid and its background child's, then it waits for the child.
COMMAND = "sleep 300 & echo $$ $!; wait"


@pytest.fixture(scope="module")
def loopback_sshd(request: pytest.FixtureRequest) -> Sshd | None:
    """The session's sshd, or None where it cannot run. Module-scoped, so
    that it starts before a test's check for processes left behind."""
    try:
        server: Sshd = request.getfixturevalue("sshd")
    except pytest.skip.Exception:
        return None
    return server


@pytest.fixture(params=["popen", "sshd"])
def spec(request: pytest.FixtureRequest, loopback_sshd: Sshd | None) -> str:
    if request.param == "popen":
        return "popen"
    if loopback_sshd is None:
        pytest.skip("no sshd here")
    return loopback_sshd.spec()


@pytest.fixture
async def started(spec: str) -> AsyncIterator[Callable[[], Any]]:
    """``await started()``: a gateway of ``spec`` running :data:`COMMAND`,
    as ``(gateway, worker pid, [shell pid, child pid], runner task)``."""
    async with asyncgw.Group(exit_timeout=2.0) as group:
        tasks: list[asyncio.Task[Any]] = []

        async def start() -> tuple[asyncgw.Gateway, int, list[int], asyncio.Task[Any]]:
            gateway = await group.makegateway(spec)
            worker = int((await gateway.remote_info()).pid)
            action = Remote(COMMAND, [gateway])
            runner = asyncio.create_task(action.run())
            tasks.append(runner)
            [(process, match)] = await action.expect(r"(\d+) (\d+)\n", timeout=20)
            assert match is not None, process.dump()
            return gateway, worker, [int(match.group(1)), int(match.group(2))], runner

        yield start
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid)]


async def _end_runner(runner: asyncio.Task[Any]) -> None:
    """The Remote ends too (its gateway is gone), with an error, not a hang."""
    done, _ = await asyncio.wait([runner], timeout=20)
    assert done, "the Remote did not end with its gateway"
    action = runner.result()
    [process] = action.processes
    assert process.ended and (process.error or process.killed), process.dump()


async def test_gateway_kill_ends_its_commands(started: Callable[[], Any]) -> None:
    gateway, _, pids, runner = await started()
    assert _alive(pids) == pids
    await gateway.kill()
    await wait_gone(pids)
    await _end_runner(runner)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["TERM", "KILL"])
async def test_a_signalled_worker_ends_its_commands(
    started: Callable[[], Any], signum: signal.Signals
) -> None:
    _, worker, pids, runner = await started()
    assert _alive(pids) == pids
    os.kill(worker, signum)
    await wait_gone([worker, *pids])
    await _end_runner(runner)


#: The caller of the lost-link test: runs COMMAND through a gateway of
#: ``argv[1]``, prints the pids as JSON, and waits to be killed.
CALLER = """
import asyncio, json, sys
import asyncgw
from asyncgw.fleet import Remote

async def main():
    gateway = await asyncgw.makegateway(sys.argv[1])
    worker = (await gateway.remote_info()).pid
    action = Remote(sys.argv[2], [gateway])
    runner = asyncio.ensure_future(action.run())
    [(process, match)] = await action.expect(r"(\\d+) (\\d+)\\n", timeout=20)
    print(json.dumps([worker, int(match.group(1)), int(match.group(2))]), flush=True)
    await runner

asyncio.run(main())
"""


async def test_a_lost_link_ends_its_commands(spec: str) -> None:
    caller = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CALLER, spec, COMMAND, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert caller.stdout is not None
        line = await asyncio.wait_for(caller.stdout.readline(), 30)
        assert line, "the caller did not start its command"
        worker, *pids = json.loads(line)
        assert _alive(pids) == pids
    finally:
        caller.kill()  # the link's local end goes with it, and nothing cleans up
        await caller.wait()
    await wait_gone([worker, *pids])
