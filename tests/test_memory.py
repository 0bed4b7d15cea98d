"""Flow control bounds memory: 1 GiB pushed at a receiver that does not read
(then reads) grows neither process by 64 MiB, in either direction."""

from __future__ import annotations

import asyncio
import os

import psutil
import pytest

import asyncgw
from asyncgw._channel import DEFAULT_WINDOW

pytestmark = pytest.mark.anyio

GIB = 1 << 30
CHUNK = 1 << 20
LIMIT = 64 << 20


class PeakRss:
    """Samples the resident size of some processes while a transfer runs."""

    def __init__(self, *pids: int) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.baseline = [proc.memory_info().rss for proc in self.processes]
        self.peak = list(self.baseline)

    def sample(self) -> None:
        for index, proc in enumerate(self.processes):
            self.peak[index] = max(self.peak[index], proc.memory_info().rss)

    async def run(self) -> None:
        while True:  # measurement, not synchronisation: cancelled when done
            self.sample()
            await asyncio.sleep(0.02)

    def growth(self) -> list[int]:
        self.sample()
        return [peak - base for peak, base in zip(self.peak, self.baseline, strict=True)]


async def test_one_gib_to_a_remote_that_does_not_read(group: asyncgw.Group) -> None:
    gw = await group.makegateway()
    channel = gw.remote_exec(
        """
        go = channel.receive()
        go.receive()  # not reading `channel` until told to
        total = 0
        for chunk in channel:
            if chunk is None:
                break
            total += len(chunk)
        go.send(total)
        """
    )
    go = gw.newchannel()
    await channel.send(go)
    chunk = os.urandom(CHUNK)
    for _ in range(4):  # warm the allocators on both sides before the baseline
        await gw.remote_exec("channel.send(len(channel.receive()))").send(chunk)
    assert gw.remote_pid is not None
    meter = PeakRss(os.getpid(), gw.remote_pid)
    sampler = asyncio.create_task(meter.run())

    async def push() -> None:
        for _ in range(GIB // CHUNK):
            await channel.send(chunk)
        await channel.send(None)

    pusher = asyncio.create_task(push())
    try:
        done, _ = await asyncio.wait([pusher], timeout=0.5)
        assert not done, "the sender was not held back by the window"
        await go.send("read now")
        async with asyncio.timeout(60):
            await pusher
            assert await go.receive() == GIB
    finally:
        sampler.cancel()
        pusher.cancel()
    local, remote = meter.growth()
    assert local < LIMIT, f"local RSS grew {local >> 20} MiB"
    assert remote < LIMIT, f"remote RSS grew {remote >> 20} MiB"


async def test_one_gib_from_a_remote_to_a_local_that_does_not_read(
    group: asyncgw.Group,
) -> None:
    gw = await group.makegateway()
    channel = gw.remote_exec(
        """
        import os
        chunk = os.urandom(1 << 20)
        for _ in range((1 << 30) // len(chunk)):
            channel.send(chunk)
        channel.send(None)
        """
    )
    assert gw.remote_pid is not None
    first = await channel.receive()  # the remote runs and has allocated its chunk
    meter = PeakRss(os.getpid(), gw.remote_pid)
    sampler = asyncio.create_task(meter.run())
    try:
        # Not reading: wait until the remote has filled our window and stopped.
        async with asyncio.timeout(30):
            while sum(size for _, size in channel._items) < DEFAULT_WINDOW - 2 * CHUNK:  # noqa: ASYNC110 - no event for this
                await asyncio.sleep(0.01)
        total = len(first)
        async with asyncio.timeout(60):
            while (chunk := await channel.receive()) is not None:
                total += len(chunk)
        assert total == GIB
    finally:
        sampler.cancel()
    local, remote = meter.growth()
    assert local < LIMIT, f"local RSS grew {local >> 20} MiB"
    assert remote < LIMIT, f"remote RSS grew {remote >> 20} MiB"
