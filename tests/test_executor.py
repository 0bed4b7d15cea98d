"""asyncgw.sync.Executor is a concurrent.futures.Executor: the same test
bodies run against the stdlib's ProcessPoolExecutor and ours, where their
semantics agree; then what only ours does (gateways of any kind, a lost
worker's tasks run elsewhere)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

import asyncgw
import asyncgw.sync
from asyncgw._loopthread import run_blocking
from asyncgw.sync import Executor

from .conftest import ssh_address
from .sshserver import Keys, ssh_server

WAIT = 20.0

Factory = Callable[..., concurrent.futures.Executor]


def process_pool(workers: int = 2) -> concurrent.futures.Executor:
    return concurrent.futures.ProcessPoolExecutor(workers)


def gateway_pool(workers: int = 2) -> concurrent.futures.Executor:
    return Executor(workers)


@pytest.fixture(params=["ProcessPoolExecutor", "asyncgw"])
def make(request: pytest.FixtureRequest) -> Factory:
    return process_pool if request.param == "ProcessPoolExecutor" else gateway_pool


def square(x):
    return x * x


def add(a, b, scale=1):
    return (a + b) * scale


def fails(x):
    raise ValueError(f"no {x}")


def fails_on_five(x):
    if x == 5:
        raise ValueError("no five")
    return x


def sleep_then(x, seconds):
    import time

    time.sleep(seconds)
    return x


def wait_for_file(path, then=None):
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.01)
    if then:
        with open(then, "a") as stream:
            stream.write("ran\n")
    return path


def pid_after(x, delay):
    import os
    import time

    time.sleep(delay)
    return x, os.getpid()


def raised(error: BaseException, name: str) -> bool:
    """The stdlib re-raises the task's exception; asyncgw a RemoteError naming it."""
    if isinstance(error, asyncgw.RemoteError):
        return error.typename == name
    return type(error).__name__ == name


def wait_until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


# ------------------------------------------------------------ the same bodies


def test_submit_result_and_exception(make: Factory) -> None:
    with make() as executor:
        assert isinstance(executor, concurrent.futures.Executor)
        assert executor.submit(square, 7).result(timeout=WAIT) == 49
        assert executor.submit(add, 1, 2, scale=3).result(timeout=WAIT) == 9
        future = executor.submit(fails, 1)
        error = future.exception(timeout=WAIT)
        assert error is not None and raised(error, "ValueError") and "no 1" in str(error)
        with pytest.raises(Exception, match="no 1"):
            future.result()


def test_map_in_order_with_chunksize_and_several_iterables(make: Factory) -> None:
    with make() as executor:
        assert list(executor.map(square, range(100))) == [x * x for x in range(100)]
        assert list(executor.map(square, range(100), chunksize=7)) == [x * x for x in range(100)]
        assert list(executor.map(add, [1, 2, 3], [10, 20])) == [11, 22]
        assert list(executor.map(square, [])) == []


def test_map_raises_where_the_failed_result_is(make: Factory) -> None:
    with make() as executor:
        results = executor.map(fails, [1, 2])
        with pytest.raises(Exception, match="no 1") as info:
            next(results)
        assert raised(info.value, "ValueError")


def test_map_gives_every_result_before_a_failed_one(make: Factory) -> None:
    with make() as executor:
        results = executor.map(fails_on_five, range(12))
        assert [next(results) for _ in range(5)] == [0, 1, 2, 3, 4]
        with pytest.raises(Exception, match="no five") as info:
            next(results)
        assert raised(info.value, "ValueError")


def test_map_timeout_counts_from_the_call(make: Factory) -> None:
    with make() as executor:
        results = executor.map(sleep_then, [1, 2], [0.0, 1.0], timeout=0.3)
        assert next(results) == 1
        with pytest.raises(TimeoutError):
            next(results)


def test_context_manager_and_shutdown_wait(make: Factory) -> None:
    with make() as executor:
        futures = [executor.submit(sleep_then, x, 0.01) for x in range(10)]
    assert all(future.done() for future in futures)
    assert [future.result() for future in futures] == list(range(10))
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(square, 1)
    executor.shutdown()  # again: nothing to do


def test_as_completed_and_wait(make: Factory) -> None:
    with make() as executor:
        futures = [executor.submit(sleep_then, x, 0.05 * (x % 3)) for x in range(12)]
        done = {future.result() for future in concurrent.futures.as_completed(futures, WAIT)}
        assert done == set(range(12))
        slow = executor.submit(sleep_then, "slow", 0.5)
        fast = executor.submit(square, 3)
        finished, _ = concurrent.futures.wait(
            [slow, fast], timeout=WAIT, return_when=concurrent.futures.FIRST_COMPLETED
        )
        assert fast in finished
        concurrent.futures.wait([slow], timeout=WAIT)
        assert slow.result() == "slow"


def test_run_in_executor(make: Factory) -> None:
    async def main(executor: concurrent.futures.Executor) -> list[int]:
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(executor, square, x) for x in range(8)))

    with make() as executor:
        assert asyncio.run(main(executor)) == [x * x for x in range(8)]


def test_a_pending_future_cancelled_never_runs(make: Factory, tmp_path: Path) -> None:
    release, marker = tmp_path / "release", tmp_path / "marker"
    with make(1) as executor:
        blocker = executor.submit(wait_for_file, str(release))
        # Enough behind it that the last ones are still pending here.
        queued = [executor.submit(wait_for_file, str(release), str(marker)) for _ in range(6)]
        victim = queued[-1]
        assert victim.cancel()
        assert victim.cancelled() and victim.done()
        release.write_text("go")
        assert blocker.result(timeout=WAIT) == str(release)
        for future in queued[:-1]:
            future.result(timeout=WAIT)
    assert marker.read_text().count("ran") == 5  # not the cancelled one


def test_shutdown_cancel_futures(make: Factory, tmp_path: Path) -> None:
    release = tmp_path / "release"
    executor = make(1)
    try:
        blocker = executor.submit(wait_for_file, str(release))
        queued = [executor.submit(square, x) for x in range(20)]
        wait_until(blocker.running)
        threading.Timer(0.3, release.write_text, ("go",)).start()
        executor.shutdown(wait=True, cancel_futures=True)
    finally:
        release.write_text("go")
    assert blocker.result() == str(release)
    cancelled = [future for future in queued if future.cancelled()]
    assert len(cancelled) >= 15  # a few may have been sent already (running)
    for future in queued:
        assert future.cancelled() or future.result() == queued.index(future) ** 2


def test_a_worker_killed_mid_map_fails_or_finishes_every_item(make: Factory) -> None:
    with make(2) as executor:
        first = executor.submit(pid_after, -1, 0.0).result(timeout=WAIT)
        futures = [executor.submit(pid_after, x, 0.02) for x in range(40)]
        wait_until(lambda: sum(future.done() for future in futures) >= 2)
        os.kill(first[1], signal.SIGKILL)
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result(timeout=WAIT)[0])
            except (BrokenProcessPool, asyncgw.GatewayLost) as exc:
                outcomes.append(type(exc).__name__)
    # Each item once: its value or a named error.
    assert len(outcomes) == 40
    assert all(
        outcome in (x, "BrokenProcessPool", "GatewayLost") for x, outcome in enumerate(outcomes)
    )
    if isinstance(executor, Executor):  # ours sent the lost tasks elsewhere
        assert outcomes == list(range(40))


# ------------------------------------------------------------ only ours


def test_task_timeout_with_no_process_left(tmp_path: Path) -> None:
    with Executor(1, timeout=0.2, exit_timeout=0.5) as executor:
        pid = executor._pool.gateways[0].remote_pid
        future = executor.submit(wait_for_file, str(tmp_path / "never"))
        with pytest.raises(asyncgw.TimeoutError):
            future.result(timeout=WAIT)
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_cancel_then_shutdown_with_no_process_left(tmp_path: Path) -> None:
    executor = Executor(2, exit_timeout=0.5)
    pids = [gateway.remote_pid for gateway in executor._pool.gateways]
    try:
        futures = [executor.submit(wait_for_file, str(tmp_path / "never")) for _ in range(6)]
        wait_until(lambda: sum(future.running() for future in futures) >= 2)
        executor.shutdown(wait=False, cancel_futures=True)
        assert sum(future.cancelled() for future in futures) >= 1
    finally:
        # The running ones hold the pool open; the interpreter-exit hook
        # (here, an explicit close with cancel) ends them.
        run_blocking(executor._pool.close, cancel=True)
    for pid in pids:
        assert pid is not None
        wait_until(lambda pid=pid: not _alive(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_executor_over_a_facade_group_with_via() -> None:
    group = asyncgw.sync.Group(["popen//id=head", "via=head//id=inner", "popen//id=other"])
    try:
        with Executor(gateways=group) as executor:
            assert sorted(executor.gateway_ids) == ["head", "inner", "other"]
            results = list(executor.map(pid_after, range(30), [0.01] * 30, chunksize=1))
        assert [x for x, _ in results] == list(range(30))
        assert {pid for _, pid in results} == {gw.remote_info().pid for gw in group}
        assert len(group) == 3  # left running: it is the caller's
    finally:
        group.terminate(timeout=2.0)


@pytest.mark.anyio
async def test_executor_over_ssh_and_popen(ssh_keys: Keys) -> None:
    async with ssh_server(ssh_keys) as (port, _):
        specs = [f"{ssh_address(ssh_keys, port)}//python={sys.executable}", "popen"]

        def run() -> list[tuple[int, int]]:
            # The ssh server runs on this test's loop: the executor's
            # blocking calls go on in a thread.
            with Executor(gateways=specs) as executor:
                return list(executor.map(pid_after, range(20), [0.01] * 20, chunksize=1))

        results = await asyncio.to_thread(run)
    assert [x for x, _ in results] == list(range(20))
    assert len({pid for _, pid in results}) == 2


def test_map_is_chunked_automatically() -> None:
    with Executor(2) as executor:
        assert sum(executor.map(square, range(20_000))) == sum(x * x for x in range(20_000))
        sizer = executor._pool._scheduler.sizer
        function = next(iter(sizer._per_item))
        assert sizer.size(function, waiting=100_000, gateways=2) > 100


def test_map_fails_a_chunk_only_where_its_task_raised() -> None:
    # (The stdlib's chunks fail whole: the 4, 6 and 7 in 5's chunk of 4 too.)
    with Executor(2) as executor:
        for chunksize in (4, 12, None):
            results = executor.map(fails_on_five, range(12), chunksize=chunksize)
            assert [next(results) for _ in range(5)] == [0, 1, 2, 3, 4]
            with pytest.raises(asyncgw.RemoteError, match="no five"):
                next(results)


def test_functions_that_cannot_travel_fail_at_submit() -> None:
    scale = 2

    def closure(x):
        return x * scale

    with Executor(1) as executor:
        with pytest.raises(ValueError, match="enclosing scope"):
            executor.submit(closure, 1)
        with pytest.raises(ValueError, match="enclosing scope"):
            executor.map(closure, [1])
