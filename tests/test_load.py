"""Load: many gateways, many channels, many messages — all accounted for,
and nothing (file descriptors, threads, channels) grows from one round to
the next. The shape is pytest-xdist's at scale: 64 workers, each serving
100 conversations at once."""

from __future__ import annotations

import asyncio
import os
import threading
import zlib

import psutil
import pytest

import asyncgw

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

GATEWAYS = 64
CHANNELS = 100  # per gateway
MESSAGES = 1000  # per channel, each way

#: Async remote code: the worker runs all of a gateway's echoes as tasks on
#: one event loop, not 100 threads.
ASYNC_ECHO = """
async for item in channel:
    await channel.send(item)
"""


def checksum(values: list[int]) -> int:
    """Order-sensitive: a lost, duplicated or swapped message changes it."""
    return zlib.crc32(b"".join(value.to_bytes(8, "big") for value in values))


async def converse(channel: asyncgw.Channel, base: int) -> tuple[int, int]:
    """Send MESSAGES values while receiving their echoes; close; return the
    count and checksum of what came back."""
    received: list[int] = []

    async def send_all() -> None:
        for value in range(base, base + MESSAGES):
            await channel.send(value)

    async def receive_all() -> None:
        received.extend([await channel.receive() for _ in range(MESSAGES)])

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(send_all())
        tasks.create_task(receive_all())
    channel.close()
    await channel.waitclose(timeout=60)  # the remote loop ended: it closed its side
    return len(received), checksum(received)


def footprint(workers: list[psutil.Process]) -> dict[str, int]:
    return {
        "local fds": len(os.listdir("/proc/self/fd")),
        "local threads": threading.active_count(),
        "remote fds": sum(worker.num_fds() for worker in workers),
        "remote threads": sum(worker.num_threads() for worker in workers),
    }


async def one_round(gateways: list[asyncgw.Gateway]) -> None:
    channels = [gw.remote_exec(ASYNC_ECHO) for gw in gateways for _ in range(CHANNELS)]
    bases = [index * MESSAGES for index in range(len(channels))]
    async with asyncio.timeout(240):
        results = await asyncio.gather(*map(converse, channels, bases))
    expected = [(MESSAGES, checksum(list(range(base, base + MESSAGES)))) for base in bases]
    pairs = enumerate(zip(results, expected, strict=True))
    wrong = [index for index, (got, want) in pairs if got != want]
    assert not wrong, f"{len(wrong)} channels lost or reordered messages, e.g. {wrong[:5]}"
    # Both sides forgot every channel of the round.
    assert all(not gw._router.channels for gw in gateways)
    statuses = await asyncio.gather(*(gw.remote_status() for gw in gateways))
    assert {status.numchannels for status in statuses} == {0}


async def test_64_gateways_100_channels_1000_messages_twice() -> None:
    async with asyncgw.Group(exit_timeout=10) as group:
        gateways = await group.makegateways(["popen"] * GATEWAYS)
        workers = [psutil.Process(gw.remote_pid) for gw in gateways]
        footprints = []
        for _ in range(2):
            await one_round(gateways)
            footprints.append(footprint(workers))
        print("footprint after each round:", footprints)  # shown with -s
        first, second = footprints
        grown = {key: (first[key], second[key]) for key in first if second[key] > first[key]}
        assert not grown, f"grew between rounds: {grown}"
