"""Cancelling the caller's task in the middle of ``send`` or ``receive``
loses nothing and sends nothing half: the channel stays usable (cancelling
``makegateway`` and ``terminate`` is in test_termination.py)."""

from __future__ import annotations

import asyncio

import pytest

import asyncgw

pytestmark = pytest.mark.anyio

CHUNK = b"x" * (256 * 1024)

#: Gets a data channel, waits for "go", then counts bytes on it until None.
COUNT_AFTER_GO = """
data = channel.receive()
channel.receive()
total = 0
for item in data:
    if item is None:
        break
    total += len(item)
channel.send(total)
"""


async def until(predicate: object) -> None:
    async with asyncio.timeout(10):
        while not predicate():  # type: ignore[operator]  # noqa: ASYNC110 - no event for this
            await asyncio.sleep(0.001)


async def test_cancelled_receive_loses_no_value(gateway: asyncgw.Gateway) -> None:
    channel = gateway.remote_exec("channel.send(channel.receive() * 2)")
    waiting = asyncio.create_task(channel.receive())
    await until(lambda: channel._waiters)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await channel.send(21)
    assert await channel.receive(timeout=10) == 42


async def test_cancelled_blocked_send_sends_nothing(gateway: asyncgw.Gateway) -> None:
    control = gateway.remote_exec(COUNT_AFTER_GO)
    data = gateway.newchannel()
    await control.send(data)
    sent = 0
    blocked = None
    while blocked is None:  # fill the window: the remote is not reading yet
        task = asyncio.create_task(data.send(CHUNK))
        await asyncio.sleep(0)
        if task.done():
            await task
            sent += 1
        else:
            blocked = task
    blocked.cancel()  # waiting for window credit or for the transport to drain
    with pytest.raises(asyncio.CancelledError):
        await blocked
    await control.send("go")
    await data.send(None)
    assert await control.receive(timeout=30) == sent * len(CHUNK)
    assert gateway.is_alive
