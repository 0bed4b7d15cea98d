"""Per-channel windows: a receiver that does not read stops its sender,
and only that sender; channel ids are forgotten once both sides closed."""

from __future__ import annotations

import asyncio

import pytest

import asyncgw
from asyncgw._channel import DEFAULT_WINDOW

pytestmark = pytest.mark.anyio

CHUNK = b"x" * (256 * 1024)


async def test_stalled_channel_blocks_only_its_sender(gateway: asyncgw.Gateway) -> None:
    # Reads one value, a side channel, then waits on that one: never on `stalled`.
    stalled = gateway.remote_exec("channel.receive().receive()")
    release = gateway.newchannel()
    await stalled.send(release)
    sent = 0

    async def flood() -> None:
        nonlocal sent
        while True:
            await stalled.send(CHUNK)
            sent += len(CHUNK)

    flooder = asyncio.create_task(flood())
    try:
        # The other channels of the same gateway keep flowing meanwhile.
        echo = gateway.remote_exec("for x in channel: channel.send(x)")
        for value in range(200):
            await echo.send(value)
            assert await echo.receive() == value
        assert not flooder.done()
        # Bounded: about one window beyond what the remote consumed.
        assert sent <= 2 * DEFAULT_WINDOW + len(CHUNK)
        echo.close()
    finally:
        flooder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await flooder
        release.close()


async def test_remote_sender_waits_for_the_local_reader(gateway: asyncgw.Gateway) -> None:
    channel = gateway.remote_exec(
        """
        chunk = b"y" * (256 * 1024)
        side = channel.receive()
        sent, limit = 0, 6 * channel.receive()
        while sent < limit:
            channel.send(chunk)
            sent += len(chunk)
            side.send(sent)
        """
    )
    side = gateway.newchannel()
    await channel.send(side)
    await channel.send(DEFAULT_WINDOW)
    progress = 0
    # Read nothing from `channel`: the remote sender must stop near one window.
    while progress < DEFAULT_WINDOW - 2 * len(CHUNK):
        progress = await side.receive(timeout=10)
    with pytest.raises(asyncgw.TimeoutError):
        while True:
            progress = await side.receive(timeout=0.3)
    assert DEFAULT_WINDOW - 2 * len(CHUNK) <= progress <= DEFAULT_WINDOW + len(CHUNK)
    # Reading releases it, and everything arrives intact.
    total = 0
    async for chunk in channel:
        total += len(chunk)
    assert total == 6 * DEFAULT_WINDOW


async def test_closed_channels_are_forgotten_on_both_sides(gateway: asyncgw.Gateway) -> None:
    baseline = (await gateway.remote_status()).numchannels
    for _ in range(20):
        channel = gateway.remote_exec("channel.send(1)")
        assert await channel.receive() == 1
        await channel.waitclose(timeout=10)
    sides = [gateway.newchannel() for _ in range(5)]
    holder = gateway.remote_exec("for side in channel: side.send('hi')")
    for side in sides:
        await holder.send(side)
        assert await side.receive() == "hi"
        side.close()
    holder.close()
    await holder.waitclose(timeout=10)
    status = await gateway.remote_status()
    assert status.numchannels <= baseline + 1  # the status request's own channel
    assert len(gateway._router.channels) <= 1


async def test_unused_channels_closed_locally_are_forgotten(gateway: asyncgw.Gateway) -> None:
    for _ in range(10):
        gateway.newchannel().close()
    # A round trip on an ordered stream: the answers to those closes are in.
    await gateway.remote_exec("pass").waitclose(timeout=10)
    assert len(gateway._router.channels) == 0
