"""Remote objects through proxies: calls, chains in one round trip,
streamed generators, errors, cancellation, release, and the blocking
facade's proxies used from threads."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator

import pytest

import asyncgw
import asyncgw.sync
from asyncgw.objects.proxy import (
    BATCH,
    Proxy,
    RemoteIterator,
    object_service,
    remote_object_count,
)

pytestmark = pytest.mark.anyio


class Counter:
    """Shipped as source: self-contained."""

    def __init__(self, start: int = 0) -> None:
        import threading

        self.value = start
        self.lock = threading.Lock()
        self.owner = {"name": "ann", "tags": ["a", "b"]}
        self.cancelled = False
        self.started = False
        self.gates: dict[str, threading.Event] = {}

    def add(self, n: int) -> int:
        with self.lock:
            self.value += n
            return self.value

    def child(self, start: int) -> Counter:
        return Counter(start)

    def numbers(self, n: int):  # type: ignore[no-untyped-def]
        yield from range(n)

    async def countdown(self, n: int):  # type: ignore[no-untyped-def]
        for i in range(n, 0, -1):
            yield i

    async def wait_forever(self) -> None:
        import asyncio

        self.started = True
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    def fail(self) -> None:
        raise KeyError("no such thing")

    def take(self, other: Counter) -> int:
        return other.value

    def wait_for(self, name: str) -> str:
        """Blocks this call's thread until ``open_gate(name)``."""
        import threading

        gate = self.gates.setdefault(name, threading.Event())
        gate.wait(60)
        return name

    def open_gate(self, name: str) -> None:
        import threading

        self.gates.setdefault(name, threading.Event()).set()

    def blob(self, size: int) -> bytes:
        return bytes(size)

    def threads(self) -> int:
        import threading

        return threading.active_count()


@pytest.fixture
async def gw() -> AsyncIterator[asyncgw.Gateway]:
    async with asyncgw.Group() as group:
        yield await group.makegateway("popen")


async def test_calls_and_reads_from_two_tasks(gw: asyncgw.Gateway) -> None:
    counter = await gw.create(Counter, start=10)
    assert isinstance(counter, Proxy)
    assert await counter.value == 10

    async def add_many() -> None:
        for _ in range(50):
            await counter.add(1)

    await asyncio.gather(add_many(), add_many())
    assert await counter.value == 110
    assert await counter.add(5) == 115


async def test_a_blocked_call_holds_up_no_other_call_or_channel(gw: asyncgw.Gateway) -> None:
    # Requests are answered on the worker's reader; one that blocks has the
    # reading taken over, so the rest of the gateway goes on meanwhile.
    counter = await gw.create(Counter)
    blocked = [asyncio.ensure_future(counter.wait_for(f"g{i}")) for i in range(8)]
    async with asyncio.timeout(20):
        assert await counter.add(1) == 1
        echo = gw.remote_exec("channel.send(channel.receive())")
        await echo.send("through")
        assert await echo.receive() == "through"
        assert not any(call.done() for call in blocked)
        threads = await counter.threads()
        for i in range(8):
            await counter.open_gate(f"g{i}")
        assert await asyncio.gather(*blocked) == [f"g{i}" for i in range(8)]
    # One reader per blocked call, at most, plus the first and the watchdog.
    assert threads <= 8 + 4


async def test_replies_waiting_for_window_do_not_stall_the_reader(gw: asyncgw.Gateway) -> None:
    # Four 5 MiB replies overflow the 8 MiB window: a reply waits, inline
    # on the reader, for an acknowledgement that only a reader can read.
    counter = await gw.create(Counter)
    size = 5 * 1024 * 1024
    async with asyncio.timeout(30):
        blobs = await asyncio.gather(*(counter.blob(size) for _ in range(4)))
    assert [len(blob) for blob in blobs] == [size] * 4


async def test_a_method_returns_a_proxy_which_goes_back_as_an_argument(
    gw: asyncgw.Gateway,
) -> None:
    counter = await gw.create(Counter)
    child = await counter.child(7)
    assert isinstance(child, Proxy) and "Counter" in repr(child)
    assert await child.add(1) == 8
    assert await counter.take(child) == 8  # the proxy is the remote object there


async def test_importable_class_by_name(gw: asyncgw.Gateway) -> None:
    ordered = await gw.create("collections:OrderedDict", [("a", 1)])
    assert await ordered.get("a") == 1
    assert await ordered.get("b", "none") == "none"
    with pytest.raises(ValueError, match="module:Name"):
        await gw.create("collections.OrderedDict")
    with pytest.raises(TypeError, match="class or 'module:Name'"):
        await gw.create(42)


async def test_a_chain_is_one_round_trip(gw: asyncgw.Gateway) -> None:
    counter = await gw.create(Counter)
    frames = []
    router = gw._router
    write_frame = router.write_frame

    def counting(kind: int, channel: int, payload: bytes = b"", tail: bytes = b"") -> None:
        frames.append(channel)
        write_frame(kind, channel, payload, tail)

    router.write_frame = counting  # type: ignore[method-assign,assignment]
    try:
        assert await counter.owner["name"].upper() == "ANN"
        assert await counter.owner["tags"][1] == "b"
    finally:
        router.write_frame = write_frame  # type: ignore[method-assign]
    assert len(frames) == 2  # one request each, whatever the chain's length


async def test_a_million_items_stream_in_bounded_memory(gw: asyncgw.Gateway) -> None:
    counter = await gw.create(Counter)
    numbers = await counter.numbers(1_000_000)
    assert isinstance(numbers, RemoteIterator)
    tracemalloc.start()
    try:
        total = count = 0
        async for number in numbers:
            total += number
            count += 1
            assert len(numbers._buffer) <= BATCH
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 1_000_000 and total == sum(range(1_000_000))
    assert peak < 5_000_000  # a few batches, not a million ints (~36 MB as a list)
    assert [n async for n in counter.countdown(3)] == [3, 2, 1]  # async generators too


async def test_closing_a_stream_early_closes_the_remote_generator(gw: asyncgw.Gateway) -> None:
    counter = await gw.create(Counter)
    before = await remote_object_count(gw)
    async with await counter.numbers(10**9) as numbers:
        assert [await numbers.__anext__() for _ in range(3)] == [0, 1, 2]
    assert await remote_object_count(gw) == before


async def test_a_remote_exception_keeps_its_type_and_traceback(gw: asyncgw.Gateway) -> None:
    counter = await gw.create(Counter)
    with pytest.raises(asyncgw.RemoteError) as info:
        await counter.fail()
    assert info.value.typename == "KeyError"
    assert "no such thing" in str(info.value)
    assert 'raise KeyError("no such thing")' in str(info.value)  # the source line
    with pytest.raises(asyncgw.RemoteError, match="AttributeError"):
        await counter.no_such_method()


async def test_cancelling_cancels_the_remote_coroutine(gw: asyncgw.Gateway) -> None:
    counter = await gw.create(Counter)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):  # a timeout of this call's own
            await counter.wait_forever()
    for _ in range(100):  # the cancel travels after the timeout
        if await counter.cancelled:
            break
        await asyncio.sleep(0.02)
    assert await counter.cancelled
    assert await counter.add(1) == 1  # the proxy and its service go on


async def test_releases_count_back_to_zero(gw: asyncgw.Gateway) -> None:
    counter = await gw.create(Counter)
    children = [await counter.child(i) for i in range(20)]
    assert await remote_object_count(gw) == 21
    await children.pop().close()
    assert await remote_object_count(gw) == 20
    async with await counter.child(99) as scoped:
        assert await scoped.value == 99
    assert await remote_object_count(gw) == 20
    del children
    gc.collect()  # collected proxies: released in one batch
    assert await remote_object_count(gw) == 1
    del counter
    gc.collect()
    assert await remote_object_count(gw) == 0


async def test_the_gateway_going_fails_calls_at_once() -> None:
    async with asyncgw.Group() as group:
        gw = await group.makegateway("popen")
        counter = await gw.create(Counter)
        await gw.kill()
        with pytest.raises(asyncgw.GatewayLost):
            async with asyncio.timeout(5):
                await counter.add(1)


def test_blocking_proxies_from_threads() -> None:
    group = asyncgw.sync.Group(["popen"])
    try:
        counter = group[0].create(Counter, start=1)
        assert counter.add(2) == 3
        assert asyncgw.sync.fetch(counter.value) == 3
        assert asyncgw.sync.fetch(counter.owner["name"]) == "ann"

        def add_many() -> None:
            for _ in range(100):
                counter.add(1)

        threads = [threading.Thread(target=add_many) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert asyncgw.sync.fetch(counter.value) == 403
        assert sum(counter.numbers(10_000)) == sum(range(10_000))
        child = counter.child(5)
        assert counter.take(child) == 5
        with pytest.raises(asyncgw.RemoteError, match="KeyError"):
            counter.fail()
        with child:
            assert child.add(1) == 6
    finally:
        group.terminate()


def test_an_interrupted_blocking_call_cancels_the_remote_coroutine() -> None:
    # Ctrl-C in a thread blocked on a remote call: KeyboardInterrupt there,
    # and the call is cancelled remotely, as a cancelled task's is.
    group = asyncgw.sync.Group(["popen"])
    try:
        counter = group[0].create(Counter)
        failures: list[BaseException] = []

        def interrupt_once_started() -> None:
            try:
                deadline = time.monotonic() + 30
                while not asyncgw.sync.fetch(counter.started):
                    assert time.monotonic() < deadline, "wait_forever never started"
                os.kill(os.getpid(), signal.SIGINT)
            except BaseException as exc:  # reported by the test
                failures.append(exc)

        helper = threading.Thread(target=interrupt_once_started)
        helper.start()
        with pytest.raises(KeyboardInterrupt):
            counter.wait_forever()
        helper.join(30)
        assert not failures, failures
        deadline = time.monotonic() + 30
        while not asyncgw.sync.fetch(counter.cancelled):
            assert time.monotonic() < deadline, "the cancel never arrived"
        assert counter.add(1) == 1  # the proxy and its service go on
    finally:
        group.terminate()


async def test_a_reference_replied_to_a_cancelled_call_is_released(gw: asyncgw.Gateway) -> None:
    """A call cancelled before its reply (a sync method runs to its end)
    still gets a reference back: its proxy is made and dropped at once, so
    the remote object is released, not left in the table."""
    counter = await gw.create(Counter)
    before = await remote_object_count(gw)
    service = object_service(gw)
    rid = next(service._ids)
    cancelled: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    service._pending[rid] = cancelled
    cancelled.cancel()  # as a cancelled call leaves its future
    await service.channel.send((rid, counter._oid, "child", 5))  # the call's request, flat
    assert await counter.add(0) == 0  # answered in order: the child's reply came first
    assert rid not in service._pending
    # Its release is on its way (a task of the service's): each count is a
    # round trip that lets it go first.
    async with asyncio.timeout(30):
        while await remote_object_count(gw) != before:
            pass
