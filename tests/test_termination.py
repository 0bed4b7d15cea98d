"""Termination and loss: nothing hangs, nothing is left running.

Bounds here are behaviour (terminate must return within its timeout plus a
small margin, a lost gateway must fail waiting calls at once), so they are
asserted generously; speed itself is measured by benchmarks/.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import asyncgw

from .fakeworker import SKIP_BOOTSTRAP

pytestmark = pytest.mark.anyio

#: Slack on top of a timeout for a termination to count as prompt.
MARGIN = 3.0

STUBBORN = """
import signal, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
channel.send("ready")
while True:
    time.sleep(1000)
"""


def _gone(pids: list[int]) -> bool:
    return not [
        pid for pid in pids
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]  # fmt: skip


async def test_terminate_kills_code_that_ignores_signals() -> None:
    group = asyncgw.Group()
    gws = await group.makegateways(["popen//execmodel=main_thread_only"] * 2)
    pids = [gw.remote_pid for gw in gws]
    channels = [gw.remote_exec(STUBBORN) for gw in gws]
    for channel in channels:
        assert await channel.receive() == "ready"
    started = time.monotonic()
    await group.terminate(timeout=0.5)
    assert time.monotonic() - started < 0.5 + MARGIN
    assert len(group) == 0
    assert _gone([pid for pid in pids if pid is not None])


async def test_terminate_without_timeout_waits_for_code_to_finish(group: asyncgw.Group) -> None:
    gw = await group.makegateway()
    channel = gw.remote_exec("import time; channel.receive(); time.sleep(0.2); channel.send(1)")
    await channel.send("go")
    await group.terminate()
    assert await channel.receive() == 1  # sent before the worker exited


async def test_terminate_ends_remote_receivers(group: asyncgw.Group) -> None:
    gw = await group.makegateway()
    channel = gw.remote_exec(
        """
        try:
            channel.receive()
        except EOFError:
            pass
        """
    )
    started = time.monotonic()
    await group.terminate(timeout=10)
    assert time.monotonic() - started < MARGIN
    with pytest.raises(EOFError):
        await channel.receive()


async def test_leaving_group_by_exception_terminates_members() -> None:
    pids: list[int | None] = []
    with pytest.raises(ZeroDivisionError):
        async with asyncgw.Group(["popen"] * 2, exit_timeout=0.5) as group:
            pids = [gw.remote_pid for gw in group]
            group[0].remote_exec(STUBBORN.replace("signal.SIG", "signal.SIG"))
            1 / 0  # noqa: B018
    assert len(pids) == 2
    assert _gone([pid for pid in pids if pid is not None])


async def test_cancelling_the_group_task_terminates_members() -> None:
    pids: list[int] = []
    ready = asyncio.Event()

    async def run() -> None:
        async with asyncgw.Group(["popen"] * 2, exit_timeout=0.5) as group:
            pids.extend(gw.remote_pid or 0 for gw in group)
            group[0].remote_exec("import time; time.sleep(1000)")
            ready.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(run())
    await ready.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _gone(pids)


@pytest.mark.parametrize("delay", [0.0, 0.005, 0.02])
async def test_cancelling_makegateway_leaves_nothing(delay: float) -> None:
    group = asyncgw.Group()
    task = asyncio.create_task(group.makegateways(["popen"] * 3))
    await asyncio.sleep(delay)  # cancel at different stages of start-up
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        await group.terminate(timeout=2)
    assert len(group) == 0 or all(gw.is_alive for gw in group)
    await group.terminate(timeout=2)


async def test_cancelling_terminate_still_kills(group: asyncgw.Group) -> None:
    gw = await group.makegateway("popen//execmodel=main_thread_only")
    channel = gw.remote_exec(STUBBORN)
    assert await channel.receive() == "ready"
    pid = gw.remote_pid
    task = asyncio.create_task(group.terminate(timeout=None))
    async with asyncio.timeout(10):
        while gw.is_alive:  # noqa: ASYNC110 - until terminate has asked it to exit
            await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pid is not None and _gone([pid])


async def test_sigkill_fails_pending_and_later_calls_at_once(group: asyncgw.Group) -> None:
    gw = await group.makegateway()
    channel = gw.remote_exec("channel.send('up'); channel.receive()")
    assert await channel.receive() == "up"
    waiting = asyncio.create_task(channel.receive())
    other = gw.remote_exec("import time; time.sleep(1000)")
    assert gw.remote_pid is not None
    os.kill(gw.remote_pid, signal.SIGKILL)
    async with asyncio.timeout(10):
        with pytest.raises(asyncgw.GatewayLost):
            await waiting
        with pytest.raises(asyncgw.GatewayLost):
            await other.waitclose()
    with pytest.raises(asyncgw.GatewayLost):
        await channel.send(1)
    with pytest.raises(asyncgw.GatewayLost):
        gw.remote_exec("pass")
    with pytest.raises(asyncgw.GatewayError):
        await gw.remote_status()
    assert not gw.is_alive
    await group.terminate(timeout=1)


async def test_remote_exit_inside_remote_exec(group: asyncgw.Group) -> None:
    gw = await group.makegateway()
    channel = gw.remote_exec("import os; channel.send(1); os._exit(3)")
    assert await channel.receive() == 1
    with pytest.raises(asyncgw.GatewayLost, match="exit status 3"):
        async with asyncio.timeout(10):
            await channel.receive()


async def test_blocked_sender_fails_when_gateway_dies(group: asyncgw.Group) -> None:
    gw = await group.makegateway()
    channel = gw.remote_exec("import time; time.sleep(1000)")  # never reads
    chunk = b"x" * (1024 * 1024)

    async def flood() -> None:
        while True:
            await channel.send(chunk)

    sender = asyncio.create_task(flood())
    async with asyncio.timeout(10):  # until the window is full and the sender waits
        while channel._credit is None or channel._credit.done():  # noqa: ASYNC110
            await asyncio.sleep(0.001)
    assert not sender.done()  # blocked by the window, not failing
    assert gw.remote_pid is not None
    os.kill(gw.remote_pid, signal.SIGKILL)
    with pytest.raises(asyncgw.GatewayLost):
        async with asyncio.timeout(10):
            await sender


def test_workers_exit_when_the_local_process_is_killed(tmp_path: object) -> None:
    script = textwrap.dedent(
        """
        import asyncio, os, signal, sys
        import asyncgw

        async def main():
            group = asyncgw.Group()
            gws = await group.makegateways(["popen"] * 3)
            gws[0].remote_exec("import time; time.sleep(1000)")
            print(*[gw.remote_pid for gw in gws], flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL
    pids = [int(pid) for pid in proc.stdout.split()]
    assert len(pids) == 3
    deadline = time.monotonic() + 10
    while not _gone(pids):
        assert time.monotonic() < deadline, f"orphaned workers {pids}"
        time.sleep(0.02)


async def test_protocol_garbage_loses_the_gateway_and_ends_the_worker(tmp_path: object) -> None:
    """A remote that breaks the protocol is cut off: its channels fail at once
    and it is sent end-of-input, so terminate() without a timeout returns."""
    from pathlib import Path

    fake = Path(str(tmp_path)) / "garbage-worker"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys, os\n"
        "from asyncgw import _wire\n"
        "hello = _wire.dumps({'protocol': _wire.PROTOCOL_VERSION, 'pid': os.getpid()})\n"
        "out = sys.stdout.buffer\n"
        "out.write(_wire.MAGIC + _wire.encode_frame(_wire.HELLO, 0, hello))\n"
        "out.flush()\n" + SKIP_BOOTSTRAP + "sys.stdin.buffer.read(1)  # wait for the first frame\n"
        "out.write(b'\\xff' * 20)  # not a frame\n"
        "out.flush()\n"
        "sys.stdin.buffer.read()  # until end of input\n"
    )
    fake.chmod(0o755)
    group = asyncgw.Group()
    try:
        gw = await group.makegateway(f"popen//python={fake}")
        channel = gw.remote_exec("pass")
        with pytest.raises(asyncgw.GatewayLost, match="unknown message type 255"):
            async with asyncio.timeout(10):
                await channel.receive()
        async with asyncio.timeout(10):
            await group.terminate(timeout=None)
        assert gw.remote_pid is not None and _gone([gw.remote_pid])
    finally:
        await group.terminate(timeout=1)
