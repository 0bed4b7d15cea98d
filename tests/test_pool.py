"""asyncgw.Pool: a parallel map over any gateways (issue 20).

Functions travel once per gateway as source; items go to whichever
gateway is free; a task that raises fails only itself; a lost gateway's
tasks go elsewhere once (or fail with GatewayLost); cancelled tasks that
had not started never run; a task's timeout fails it and tells it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import sys
from pathlib import Path

import pytest

import asyncgw
import asyncgw.sync
from asyncgw.pool.chunking import MAX_ITEMS, MIN_SECONDS, TARGET_SECONDS, ChunkSizer
from asyncgw.remote.pool import PACK_MIN, items_of, pack, unpack

from .conftest import PYTHON39, ssh_address
from .sshserver import Keys, ssh_server

pytestmark = pytest.mark.anyio

WAIT = 20.0


def square(x):
    return x * x


def counted(x):
    # Counts calls in the namespace the function was defined in: one per
    # gateway if the function travels once per gateway.
    import os

    calls = globals()["calls"] = globals().get("calls", 0) + 1
    return x, os.getpid(), calls


def fails_on_three(x):
    if x == 3:
        raise ValueError("three is not allowed")
    return x


def where(x):
    import os
    import time

    time.sleep(float(os.environ.get("ASYNCGW_TEST_SLOW", "0")))
    return x, os.getpid()


def add(a, b, scale=1):
    return (a + b) * scale


async def add_later(a, b):
    import asyncio

    await asyncio.sleep(0)
    return a + b


def wait_for_file(path, then=None):
    import os
    import time

    if then:
        with open(then + ".started", "w") as stream:
            stream.write("started")
    while not os.path.exists(path):
        time.sleep(0.01)
    if then:
        with open(then, "w") as stream:
            stream.write("ran")
    return path


def mark(path):
    with open(path, "w") as stream:
        stream.write("ran")
    return path


def until_told(path, timeout):
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if asyncgw_cancelled():  # noqa: F821 - given by the pool's far side
            with open(path, "w") as stream:
                stream.write("told")
            return "told"
        time.sleep(0.01)
    return "never told"


def not_a_wire_value(x):
    return object()


def same(x):
    return x


def typed(x):
    return type(x).__name__, x


def pid_after(x, delay):
    import os
    import time

    time.sleep(delay)
    return x, os.getpid()


def pid_maybe_after(x, delay):
    import os
    import time

    if delay:  # (even sleep(0) takes tens of microseconds)
        time.sleep(delay)
    return x, os.getpid()


async def wait_until(condition, timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - a state of the pool, polled
            await asyncio.sleep(0.01)


async def test_map_keeps_order_and_ships_the_function_once_per_gateway() -> None:
    async with asyncgw.Pool(2) as pool:
        results = await pool.map(counted, range(200), chunksize=3)
        gateways = {gateway.remote_pid for gateway in pool.gateways}
    assert [x for x, _, _ in results] == list(range(200))
    last_count: dict[int, int] = {}
    for _, pid, calls in results:
        last_count[pid] = max(last_count.get(pid, 0), calls)
    assert set(last_count) <= gateways
    # The counts went on across chunks: one definition per gateway.
    assert sum(last_count.values()) == 200


async def test_imap_imap_unordered_starmap_submit() -> None:
    async with asyncgw.Pool(["popen", "popen"]) as pool:
        assert [x async for x in pool.imap(square, range(50))] == [x * x for x in range(50)]
        unordered = [x async for x in pool.imap_unordered(square, range(50))]
        assert sorted(unordered) == [x * x for x in range(50)]
        assert await pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
        assert await pool.map(add, [1, 2], [10, 20]) == [11, 22]
        assert await pool.submit(add, 1, 2, scale=10) == 30
        assert await pool.submit(add_later, 20, 22) == 42
        assert await pool.map(square, []) == []


async def test_a_task_that_raises_fails_only_itself() -> None:
    async with asyncgw.Pool(2) as pool:
        results = await pool.map(fails_on_three, range(6), return_exceptions=True)
        assert results[:3] == [0, 1, 2] and results[4:] == [4, 5]
        error = results[3]
        assert isinstance(error, asyncgw.RemoteError)
        assert error.typename == "ValueError" and "three is not allowed" in error.formatted
        assert "fails_on_three" in error.formatted  # the caller's function, in the traceback
        with pytest.raises(asyncgw.RemoteError, match="three is not allowed"):
            await pool.map(fails_on_three, range(6))
        futures = [pool.submit(fails_on_three, x) for x in range(5)]
        done = await asyncio.gather(*futures, return_exceptions=True)
        assert [type(item).__name__ for item in done] == ["int"] * 3 + ["RemoteError", "int"]
        with pytest.raises(asyncgw.RemoteError, match="three"):
            async for _ in pool.imap(fails_on_three, range(6)):
                pass
        # The pool goes on.
        assert await pool.map(square, range(4)) == [0, 1, 4, 9]


async def test_values_the_wire_cannot_carry_fail_their_own_task() -> None:
    async with asyncgw.Pool(1) as pool:
        results = await pool.map(square, [1, object(), 3], chunksize=3, return_exceptions=True)
        assert results[0] == 1 and results[2] == 9
        assert isinstance(results[1], asyncgw.DumpError)
        results = await pool.map(not_a_wire_value, [1, 2], return_exceptions=True)
        assert all(
            isinstance(item, asyncgw.RemoteError) and "DumpError" in item.formatted
            for item in results
        )
        assert await pool.submit(square, 5) == 25


#: Runs that must come back as they went, types included, and whether
#: they travel packed (plain 64-bit ints, floats) or as wire values.
RUNS = [
    ([0, 1, -1, 2**63 - 1, -(2**63), 7], True),
    ([2**63, 1, 2, 3, 4], False),  # beyond 64 bits
    ([1.5, -0.0, float("inf"), float("-inf"), 1e-310, 2.0], True),
    ([True, False, True, True, False], False),  # bools stay bools
    ([1, 2.0, 3, 4.0, 5], False),  # a mix stays a mix
    ([1, 2, None, 4, 5], False),
    ([3, 1, 2][: PACK_MIN - 1], False),  # too short to gain
]


@pytest.mark.parametrize(("run", "packs"), RUNS)
def test_packed_runs_give_back_the_same_values(run: list[object], packs: bool) -> None:
    packed = pack(run)
    assert isinstance(packed, tuple) == packs
    back = unpack(packed)
    assert back == run and [type(x) for x in back] == [type(x) for x in run]
    nan = unpack(pack([float("nan")] * PACK_MIN))
    assert len(nan) == PACK_MIN and all(x != x for x in nan)


def test_packed_runs_are_little_endian_8_byte_values_whatever_the_machine() -> None:
    # The far side may be another machine: the form is fixed, not native.
    assert pack([1, -2, 3, 2**40]) == ("q", struct.pack("<4q", 1, -2, 3, 2**40))
    assert pack([0.5, -1.0, 3.25, 1e300]) == ("d", struct.pack("<4d", 0.5, -1.0, 3.25, 1e300))


@pytest.mark.parametrize(
    "bad", [("q", b"1234567"), ("x", b"12345678"), ("q", "12345678"), ("q",), "q", (1, 2)]
)
def test_a_run_that_is_not_packed_by_pack_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        unpack(bad)


def test_a_range_travels_as_its_bounds_and_only_to_the_far_side() -> None:
    assert items_of(("r", 5, 100, 7)) == range(5, 100, 7)
    assert items_of(pack([1, 2, 3, 4])) == [1, 2, 3, 4]
    for bad in [("r", 0, 10, 0), ("r", 0, 10.0, 1), ("r", "0", 10, 1), ("r", 0, 10)]:
        with pytest.raises(ValueError):
            items_of(bad)
    with pytest.raises(ValueError):  # answers never come as ranges
        unpack(("r", 0, 10**12, 1))


RANGES = [range(0), range(7), range(5, 1000, 7), range(1000, 0, -3), range(2**70, 2**70 + 50)]


async def test_maps_over_ranges() -> None:
    async with asyncgw.Pool(2) as pool:
        for items in RANGES:
            expected = [x * x for x in items]
            for chunksize in (None, 1, 3, 10_000):
                assert await pool.map(square, items, chunksize=chunksize) == expected
            assert [x async for x in pool.imap(square, items)] == expected
            assert sorted([x async for x in pool.imap_unordered(square, items)]) == sorted(expected)
        # A range beside another iterable travels as values.
        assert await pool.map(add, range(3), [10, 20, 30]) == [10, 21, 32]
    with asyncgw.sync.Executor(2) as executor:
        for items in RANGES:
            assert list(executor.map(square, items)) == [x * x for x in items]


async def test_values_keep_their_types_on_the_way_there_and_back() -> None:
    async with asyncgw.Pool(2) as pool:
        for run, _ in RUNS:
            assert await pool.map(same, run, chunksize=len(run)) == run
            results = await pool.map(typed, run, chunksize=len(run))
            assert results == [(type(x).__name__, x) for x in run]
        nan = await pool.map(same, [float("nan")] * 8)
        assert all(x != x for x in nan)


async def test_a_cancelled_map_skips_the_items_of_a_chunk_not_started(tmp_path: Path) -> None:
    release = tmp_path / "release"
    markers = [tmp_path / f"ran-{i}" for i in range(6)]
    async with asyncgw.Pool(1) as pool:
        waiter = asyncio.ensure_future(
            pool.starmap(wait_for_file, [(str(release), str(m)) for m in markers], chunksize=6)
        )
        # Cancelled once the chunk's first item runs (and waits): a cancel
        # sent sooner may overtake the chunk's start and skip all six.
        started = Path(f"{markers[0]}.started")
        await wait_until(started.exists)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        release.write_text("go")
        assert await pool.submit(square, 4) == 16  # after the chunk's answer
    # All six went in one chunk; the first had started, the five others
    # were skipped there.
    assert [m.exists() for m in markers] == [True] + [False] * 5


async def test_functions_that_cannot_travel_are_refused_here() -> None:
    scale = 3

    def closure(x):
        return x * scale

    async with asyncgw.Pool(1) as pool:
        with pytest.raises(ValueError, match="enclosing scope"):
            pool.submit(closure, 1)
        with pytest.raises(TypeError):
            await pool.map(print, [1])


async def test_items_go_to_whichever_gateway_is_free() -> None:
    specs = ["popen//env:ASYNCGW_TEST_SLOW=1", "popen"]
    async with asyncgw.Pool(specs, chunksize=1) as pool:
        slow = next(gw.remote_pid for gw in pool.gateways if gw.spec.env)
        results = await pool.map(where, range(40))
    assert [x for x, _ in results] == list(range(40))
    on_slow = sum(1 for _, pid in results if pid == slow)
    # The slow gateway took what it was given first (its window), no more:
    # the other did the rest meanwhile.
    assert on_slow <= 3


def test_automatic_chunk_sizes() -> None:
    sizer = ChunkSizer()
    assert sizer.size(1, waiting=10_000, gateways=2) == 1  # not measured: one at a time
    sizer.measured(1, items=1, seconds=1e-7)
    assert sizer.size(1, waiting=1_000_000, gateways=2) == MAX_ITEMS
    # Tiny tasks: the last items are not split into chunks too small to pay
    # for their messages (at least MIN_SECONDS of work, or all that waits)...
    sizer.measured(4, items=100, seconds=1e-4)  # 1 us a task
    assert sizer.size(4, waiting=10_000, gateways=2) == 1250  # a share
    assert sizer.size(4, waiting=1000, gateways=2) == round(MIN_SECONDS / 1e-6) == 1000
    assert sizer.size(4, waiting=80, gateways=2) >= 80
    # ...once the call's own chunks were measured: before, the figure may be
    # of other work (64 long tasks after a warm-up on tiny ones).
    assert sizer.size(4, waiting=64, gateways=2, measured=False) == 8
    # A measurement far off the average replaces it.
    sizer.measured(4, items=8, seconds=8 * 0.005)
    assert sizer.size(4, waiting=56, gateways=2) == 4
    sizer.measured(3, items=10, seconds=1e-3)  # 100 us a task
    assert sizer.size(3, waiting=10_000, gateways=2) == int(TARGET_SECONDS / 1e-4) == 200
    assert sizer.size(3, waiting=160, gateways=2) == 20  # the tail still spreads
    assert sizer.size(3, waiting=40, gateways=2) == round(MIN_SECONDS / 1e-4) == 10
    sizer.measured(2, items=4, seconds=4.0)
    assert sizer.size(2, waiting=1000, gateways=2) == 1  # slow tasks one by one


async def test_long_tasks_spread_even_after_the_function_ran_tiny_ones() -> None:
    async with asyncgw.Pool(2) as pool:
        await pool.starmap(pid_maybe_after, [(x, 0) for x in range(2000)])  # ~1 us each
        results = await pool.starmap(pid_maybe_after, [(x, 0.05) for x in range(8)])
        assert [x for x, _ in results] == list(range(8))
        assert {pid for _, pid in results} == {gw.remote_pid for gw in pool.gateways}


@pytest.mark.parametrize("window", [1, 2])
async def test_cancelled_tasks_that_had_not_started_never_run(tmp_path: Path, window: int) -> None:
    release, marker = tmp_path / "release", tmp_path / "marker"
    async with asyncgw.Pool(1, window=window) as pool:
        blocker = pool.submit(wait_for_file, str(release))
        victim = pool.submit(mark, str(marker))
        # window 2: the victim waits on the far side; 1: here.
        await wait_until(lambda: len(pool._scheduler.links[0].inflight) == window)
        victim.cancel()
        release.write_text("go")
        assert await blocker == str(release)
        assert await pool.submit(square, 3) == 9  # after the victim's turn
    assert victim.cancelled()
    assert not marker.exists()


async def test_cancelling_the_awaiting_task_cancels_the_map(tmp_path: Path) -> None:
    release, marker = tmp_path / "release", tmp_path / "marker"
    async with asyncgw.Pool(1) as pool:
        waiter = asyncio.ensure_future(
            pool.starmap(wait_for_file, [(str(release), str(marker))] * 5, chunksize=1)
        )
        await wait_until(lambda: bool(pool._scheduler.links[0].inflight))
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        release.write_text("go")
        assert await pool.submit(square, 4) == 16
    # The first task had started (it ran); none of the four others did.
    assert marker.read_text() == "ran"
    assert not pool._scheduler.active


async def test_a_task_timeout_fails_it_and_tells_it(tmp_path: Path) -> None:
    told = tmp_path / "told"
    async with asyncgw.Pool(1, timeout=0.3) as pool:
        future = pool.submit(until_told, str(told), 30)
        with pytest.raises(asyncgw.TimeoutError, match=r"did not return within 0\.3s"):
            await future
        await wait_until(told.exists)
        assert await pool.submit(square, 6) == 36  # the gateway is free again
        results = await pool.map(until_told, [str(told)], [0.0], timeout=5)
        assert results == ["never told"]


async def test_a_timed_out_task_that_never_returns_leaves_no_process(tmp_path: Path) -> None:
    async with asyncgw.Pool(1, timeout=0.2, exit_timeout=0.5) as pool:
        pid = pool.gateways[0].remote_pid
        with pytest.raises(TimeoutError):
            await pool.submit(wait_for_file, str(tmp_path / "never"))
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed at close (the autouse fixture checks every child too)


async def test_a_gateway_lost_mid_map_has_its_tasks_run_elsewhere_once() -> None:
    async with asyncgw.Pool(2, chunksize=1) as pool:
        victim = pool.gateways[0].remote_pid
        assert victim is not None
        results: list[tuple[int, int]] = []
        async for item in pool.imap(pid_after, range(40), [0.02] * 40):
            results.append(item)
            if len(results) == 4:
                os.kill(victim, signal.SIGKILL)
        assert len(pool.gateways) == 1
    assert [x for x, _ in results] == list(range(40))  # each item exactly once, in order
    assert all(pid != victim for _, pid in results[8:])


async def test_without_retries_a_lost_gateway_fails_its_tasks_with_gateway_lost() -> None:
    async with asyncgw.Pool(2, chunksize=1, retries=0) as pool:
        victim = pool.gateways[0].remote_pid
        assert victim is not None
        job = asyncio.ensure_future(
            pool.map(pid_after, range(30), [0.05] * 30, return_exceptions=True)
        )
        await wait_until(lambda: len(pool._scheduler.links[0].inflight) > 0)
        os.kill(victim, signal.SIGKILL)
        results = await job
    lost = [item for item in results if isinstance(item, asyncgw.GatewayLost)]
    done = [item for item in results if isinstance(item, tuple)]
    assert lost and len(lost) + len(done) == 30
    assert all(error.gateway_id == "gw0" for error in lost)
    assert [x for x, _ in done] == sorted(x for x, _ in done)


async def test_with_no_gateway_left_waiting_tasks_fail_with_gateway_lost() -> None:
    async with asyncgw.Pool(1, chunksize=1) as pool:
        victim = pool.gateways[0].remote_pid
        assert victim is not None
        job = asyncio.ensure_future(pool.map(pid_after, range(10), [0.05] * 10))
        await wait_until(lambda: bool(pool._scheduler.links[0].inflight))
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(asyncgw.GatewayLost):
            await job


async def test_restarted_gateways_rejoin_the_pool() -> None:
    async with asyncgw.Pool(1, restart=2) as pool:
        victim = pool.gateways[0].remote_pid
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        await wait_until(lambda: [gw.remote_pid for gw in pool.gateways] not in ([], [victim]))
        x, pid = await pool.submit(pid_after, 7, 0.0)
    assert x == 7 and pid != victim


async def test_pool_over_ssh_via_and_a_mixed_group(ssh_keys: Keys) -> None:
    async with ssh_server(ssh_keys) as (port, _), asyncgw.Group() as group:
        await group.makegateways(
            [
                f"{ssh_address(ssh_keys, port)}//id=ssh//python={sys.executable}",
                "popen//id=local",
                "via=local//id=inner",
            ]
        )
        async with asyncgw.Pool(group, chunksize=1) as pool:
            results = await pool.map(pid_after, range(60), [0.01] * 60)
            assert {gw.id for gw in pool.gateways} == {"ssh", "local", "inner"}
        assert [x for x, _ in results] == list(range(60))
        ran_on = {pid for _, pid in results}
        assert ran_on == {gateway.remote_pid for gateway in group}
        assert len(group) == 3  # a pool given a group leaves it running
        await group.terminate(timeout=2.0)


@pytest.mark.python("3.9")  # skips, or fails in CI, where no 3.9 is found
async def test_the_far_side_runs_on_python_3_9() -> None:
    async with asyncgw.Pool([f"popen//python={PYTHON39}"]) as pool:
        assert await pool.map(square, range(5)) == [0, 1, 4, 9, 16]
        error = (await pool.map(fails_on_three, [3], return_exceptions=True))[0]
        assert isinstance(error, asyncgw.RemoteError) and error.typename == "ValueError"


async def test_a_pool_must_be_started_and_refuses_work_once_closed() -> None:
    pool = asyncgw.Pool(1)
    with pytest.raises(RuntimeError, match="async with"):
        pool.submit(square, 1)
    async with pool:
        pass
    with pytest.raises(RuntimeError):
        await pool.map(square, [1])
