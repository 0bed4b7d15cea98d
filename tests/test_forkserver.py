"""Fork servers: several popen gateways of one interpreter are forked from
an interpreter started once, and behave exactly like freshly started ones."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import asyncgw

from .conftest import PYTHON39, SMOKE_PYTHON, require_python, wait_gone

pytestmark = pytest.mark.anyio

WHO = """
import os
channel.send((os.getpid(), os.getppid(), os.getsid(0), os.getcwd(), os.environ.get("MARK")))
"""


async def who(gw: asyncgw.Gateway) -> tuple[int, int, int, str, str | None]:
    return tuple(await gw.remote_exec(WHO).receive(timeout=10))  # type: ignore[return-value]


async def test_a_batch_of_popen_workers_is_forked_from_one_server(
    group: asyncgw.Group, tmp_path: Path
) -> None:
    specs = [f"popen//chdir={tmp_path / str(n)}//env:MARK=m{n}" for n in range(3)]
    gws = await group.makegateways(specs)
    answers = [await who(gw) for gw in gws]
    server = {ppid for _, ppid, _, _, _ in answers}
    assert len(server) == 1 and server != {os.getpid()}, answers
    for n, (pid, _, sid, cwd, mark) in enumerate(answers):
        assert pid == gws[n].remote_pid
        assert sid == pid  # a session of its own, as a started worker has
        assert (cwd, mark) == (str(tmp_path / str(n)), f"m{n}")  # config applied
    # A later gateway of the same interpreter is forked too.
    later = await who(await group.makegateway("popen"))
    assert later[1] in server
    # A different interpreter gets no fork server from a single start.
    other = await group.makegateway(f"popen//python={sys.executable} -X dev")
    assert (await who(other))[1] == os.getpid()
    server_pid = server.pop()
    await group.terminate(timeout=5)
    await wait_gone([server_pid, *(answer[0] for answer in answers), later[0]])


async def test_forked_workers_report_their_exit_status_and_stderr(group: asyncgw.Group) -> None:
    gws = await group.makegateways(["popen"] * 2)
    channel = gws[0].remote_exec("import os, sys; sys.stderr.write('last words\\n'); os._exit(7)")
    with pytest.raises(asyncgw.GatewayLost, match=r"exit status 7.*last words"):
        await channel.receive(timeout=10)
    assert await gws[1].remote_exec("channel.send(1)").receive(timeout=10) == 1


async def test_killed_fork_server_leaves_working_gateways_and_starts_afresh(
    group: asyncgw.Group,
) -> None:
    gws = await group.makegateways(["popen"] * 2)
    server_pid = (await who(gws[0]))[1]
    os.kill(server_pid, signal.SIGKILL)
    await wait_gone([server_pid])
    # Its workers go on; their end is noticed without the server (pidfd).
    assert await gws[1].remote_exec("channel.send(2)").receive(timeout=10) == 2
    fresh = await group.makegateway("popen")
    assert (await who(fresh))[1] == os.getpid()
    async with asyncio.timeout(10):
        await group.terminate(timeout=2)
    await wait_gone([gw.remote_pid for gw in [*gws, fresh]])


async def test_a_fork_server_that_cannot_start_gives_the_direct_error() -> None:
    async with asyncgw.Group() as group:
        with pytest.raises(asyncgw.HostNotFound, match="/nonexistent/python"):
            await group.makegateways(["popen//python=/nonexistent/python"] * 2)
        assert len(group) == 0


@pytest.mark.python("3.9")  # skips, or fails in CI, where no 3.9 is found
async def test_fork_server_on_the_oldest_supported_python(group: asyncgw.Group) -> None:
    gws = await group.makegateways([f"popen//python={PYTHON39}"] * 2)
    info = [await gw.remote_info() for gw in gws]
    assert [tuple(i.version_info[:2]) for i in info] == [(3, 9), (3, 9)]
    assert (await who(gws[0]))[1] == (await who(gws[1]))[1] != os.getpid()


def test_server_and_forked_workers_exit_when_the_local_process_is_killed() -> None:
    script = textwrap.dedent(
        """
        import asyncio, os, signal
        import asyncgw

        async def main():
            group = asyncgw.Group()
            gws = await group.makegateways(["popen"] * 3)
            gws[0].remote_exec("import time; time.sleep(1000)")
            server = await gws[1].remote_exec("import os; channel.send(os.getppid())").receive()
            print(server, *[gw.remote_pid for gw in gws], flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pids = [int(pid) for pid in proc.stdout.split()]
    assert len(pids) == 4
    asyncio.run(wait_gone(pids))


async def test_forked_main_thread_only_workers_run_code_on_their_main_thread(
    group: asyncgw.Group,
) -> None:
    gws = await group.makegateways(["popen//execmodel=main_thread_only"] * 2)
    code = "import threading; channel.send(threading.current_thread() is threading.main_thread())"
    assert [await gw.remote_exec(code).receive(timeout=10) for gw in gws] == [True, True]
    assert (await who(gws[0]))[1] == (await who(gws[1]))[1] != os.getpid()


FDS = """
import os
where = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
channel.send(sorted(int(fd) for fd in os.listdir(where)))
"""


async def test_forked_workers_hold_only_their_own_descriptors(group: asyncgw.Group) -> None:
    # Sixteen requests in flight: the fork server forks those it has back
    # to back, and each child must close the others' pipe ends (a worker
    # holding another's stdout would hide that one's end).
    gws = await group.makegateways(["popen"] * 16)
    forked = [await gw.remote_exec(FDS).receive(timeout=10) for gw in gws]
    fresh = await group.makegateway(f"popen//python={sys.executable} -X dev")
    assert (await who(fresh))[1] == os.getpid()
    expected = await fresh.remote_exec(FDS).receive(timeout=10)
    assert forked == [expected] * len(gws)


STATE = """
import gc, signal, sys
handlers = {}
for signum in sorted(signal.valid_signals()):
    try:
        handlers[int(signum)] = repr(signal.getsignal(signum))
    except (OSError, ValueError):
        pass
wakeup = signal.set_wakeup_fd(-1)  # the main thread's (main_thread_only)
signal.set_wakeup_fd(wakeup)
blocked = sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))
channel.send([handlers, wakeup, blocked, gc.isenabled(), gc.get_threshold(),
              sys.stdout.line_buffering])
"""


async def test_forked_workers_start_in_the_state_of_a_fresh_one(group: asyncgw.Group) -> None:
    # The fork server prepares (gc, stdout) and rehearses a worker's start
    # before it forks, and installs a SIGCHLD handler and a wake-up fd of
    # its own: a child must still look like a started worker.
    spec = "popen//execmodel=main_thread_only"
    gws = await group.makegateways([spec] * 2)
    forked = [await gw.remote_exec(STATE).receive(timeout=10) for gw in gws]
    async with asyncgw.Group(exit_timeout=2.0) as alone:  # one start: no fork server
        fresh = await alone.makegateway(spec)
        assert (await who(fresh))[1] == os.getpid() != (await who(gws[0]))[1]
        expected = await fresh.remote_exec(STATE).receive(timeout=10)
    assert forked == [expected] * len(gws)
    assert expected[1] == -1 and expected[5] is True


async def test_smoke_fork_server_on_python38() -> None:
    # 3.8 is below the supported 3.9 (a smoke test only): its fork server
    # forks workers and reports their exit status (it has no
    # os.waitstatus_to_exitcode; the fork server died at its first reap).
    python = require_python(SMOKE_PYTHON)
    async with asyncgw.Group(exit_timeout=2.0) as group:
        gws = await group.makegateways([f"popen//python={python}"] * 2)
        server = (await who(gws[0]))[1]
        assert server == (await who(gws[1]))[1] != os.getpid()
        with pytest.raises(asyncgw.GatewayLost, match="exit status 7"):
            await gws[0].remote_exec("import os; os._exit(7)").receive(timeout=10)
        assert (await who(gws[1]))[1] == server
        fresh = await group.makegateway(f"popen//python={python}")
        assert (await who(fresh))[1] == server  # forked: the server lives on


TAIL = """
buffer = channel.gateway._worker._read_buffer  # small reads never reach its end
channel.send(bytes(buffer[-16:]))
mark = channel.receive()
if mark:
    buffer[-16:] = mark
channel.send(bytes(buffer[-16:]))
"""


async def test_forked_workers_read_into_buffers_of_their_own(group: asyncgw.Group) -> None:
    # Each child configures its own copy of the fork server's blank Worker,
    # and maps its read buffer itself: mmap(-1) is MAP_SHARED, so a buffer
    # mapped before the fork would be one buffer for all the children.
    gws = await group.makegateways(["popen"] * 2)
    channels = [gw.remote_exec(TAIL) for gw in gws]
    assert [await ch.receive(timeout=10) for ch in channels] == [bytes(16)] * 2
    await channels[0].send(b"M" * 16)
    assert await channels[0].receive(timeout=10) == b"M" * 16
    await channels[1].send(b"")
    assert await channels[1].receive(timeout=10) == bytes(16)
