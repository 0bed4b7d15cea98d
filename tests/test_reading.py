"""Who reads a worker's input (``remote/reading.py``): a thread waiting for
a value reads for itself, and a thread holding the reading never stalls
the rest of the gateway — whatever its code does meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import asyncgw

pytestmark = pytest.mark.anyio

EXECMODELS = ["thread", "main_thread_only"]

# Remote code shares a gate through builtins: each remote_exec has a
# namespace of its own.
GATE = "import builtins, threading\nbuiltins.__dict__.setdefault('gate', threading.Event())\n"


@pytest.fixture(params=EXECMODELS)
async def gw(request: pytest.FixtureRequest) -> AsyncIterator[asyncgw.Gateway]:
    async with asyncgw.Group() as group:
        yield await group.makegateway(f"popen//execmodel={request.param}")


@pytest.fixture
async def threaded_gw() -> AsyncIterator[asyncgw.Gateway]:
    """Code runs at once beside other code (under ``main_thread_only`` a
    second piece waits for the first, by design)."""
    async with asyncgw.Group() as group:
        yield await group.makegateway("popen")


async def echo_once(gw: asyncgw.Gateway, value: object) -> object:
    channel = gw.remote_exec("channel.send(channel.receive())")
    await channel.send(value)
    async with asyncio.timeout(10):
        return await channel.receive()


async def test_a_thread_exchanging_values_reads_for_itself(gw: asyncgw.Gateway) -> None:
    channel = gw.remote_exec(
        """
        import threading
        me = threading.get_ident()
        for value in channel:
            channel.send((value, channel._worker.reading._reader == me))
        """
    )
    readers = []
    for i in range(50):
        await channel.send(i)
        value, read_it_itself = await channel.receive()
        assert value == i
        readers.append(read_it_itself)
    # The first value is read by the worker's reader and given, with the
    # reading, to the thread that waits for it; from then on it reads.
    # Only a takeover interrupts that: the thread away from reading for
    # TAKEOVER_AFTER (2 ms), as a busy machine's scheduler may make it,
    # loses the duty until a later value brings it back. Without the
    # hand-over no exchange at all would be read by the thread itself.
    assert sum(readers[1:]) >= 0.8 * len(readers[1:]), readers


async def test_a_holder_that_blocks_does_not_stall_other_channels(
    threaded_gw: asyncgw.Gateway,
) -> None:
    gw = threaded_gw
    holder = gw.remote_exec(GATE + "channel.send(channel.receive())\ngate.wait(60)\n")
    await holder.send("hold")
    assert await holder.receive() == "hold"  # it holds the reading, blocked
    # Values for other channels are read all the same (the watchdog hands
    # the reading on), and other code runs.
    for i in range(5):
        assert await echo_once(gw, i) == i
    assert not holder.isclosed()
    gw.remote_exec(GATE + "gate.set()")
    async with asyncio.timeout(10):
        await holder.waitclose()


async def test_waiting_with_a_timeout_hands_the_reading_on(threaded_gw: asyncgw.Gateway) -> None:
    gw = threaded_gw
    channel = gw.remote_exec(
        """
        channel.send(channel.receive())
        try:
            channel.receive(timeout=0.3)
        except TimeoutError:
            channel.send("timed out")
        channel.send(channel.receive())
        """
    )
    await channel.send(1)
    assert await channel.receive() == 1
    assert await echo_once(gw, "meanwhile") == "meanwhile"
    async with asyncio.timeout(10):
        assert await channel.receive() == "timed out"
    await channel.send(2)
    async with asyncio.timeout(10):
        assert await channel.receive() == 2


async def test_bulk_and_small_values_interleaved_in_order(gw: asyncgw.Gateway) -> None:
    # Large values leave the reading with the reader (read-ahead); small
    # ones give it to the receiving thread: the order stays the order sent.
    channel = gw.remote_exec(
        """
        for value in channel:
            channel.send(len(value) if isinstance(value, bytes) else value)
        """
    )
    sizes = [10, 200_000, 3, 1 << 20, 70_000, 1, 65_535, 65_536]
    for size in sizes:
        await channel.send(b"x" * size)
        await channel.send(size)
    async with asyncio.timeout(20):
        answers = [await channel.receive() for _ in range(2 * len(sizes))]
    assert answers == [size for size in sizes for _ in range(2)]


async def test_many_short_pieces_of_code_in_a_row(gw: asyncgw.Gateway) -> None:
    # Each takes the reading with its value and must hand it on when it
    # ends: the next one's value is read at once, not after a watchdog poll.
    async with asyncio.timeout(30):
        for i in range(200):
            assert await echo_once(gw, i) == i
