"""popen's PipeWriter (what the pipe does not take is kept as the caller's
objects, written with writev as it drains) and the unjoined send of large
bytes and str values."""

from __future__ import annotations

import asyncio
import os

import pytest

import asyncgw
from asyncgw import _wire
from asyncgw.transports import pipewriter
from asyncgw.transports.pipewriter import PipeWriter

pytestmark = pytest.mark.anyio


async def _drain(fd: int, total: int) -> bytes:
    """Read ``total`` bytes from the non-blocking ``fd`` on the loop, slowly."""
    loop = asyncio.get_running_loop()
    got = bytearray()
    while len(got) < total:
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, ready.set_result, None)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
        got += os.read(fd, 7000)  # less than a write: the writer keeps the rest
    return bytes(got)


async def test_what_the_pipe_does_not_take_arrives_later_in_order() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    events: list[str] = []
    writer = PipeWriter(write_end, lambda: events.append("pause"), lambda: events.append("resume"))
    try:
        chunks = [bytes([n]) * size for n, size in enumerate([300_000, 10, 200_000, 1, 90_000])]
        chunks.append(bytearray(b"mutable"))  # copied: the caller may change it
        reading = asyncio.ensure_future(_drain(read_end, sum(map(len, chunks))))
        for chunk in chunks:
            writer.write(chunk)  # type: ignore[arg-type]
        assert writer.size > pipewriter.HIGH_WATER and events == ["pause"]
        chunks[-1][:] = b"changed"
        closed = asyncio.get_running_loop().create_future()
        writer.when_drained(lambda: closed.set_result(writer.size))
        writer.write(b"after the end: dropped")
        got = await asyncio.wait_for(reading, 30)
        assert await asyncio.wait_for(closed, 30) == 0
        assert got == b"".join(chunks[:-1]) + b"mutable"
        assert events == ["pause", "resume"]
    finally:
        writer.close()
        os.close(read_end)
        os.close(write_end)


async def test_a_write_to_a_closed_pipe_drops_everything_and_resumes() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    resumed = asyncio.get_running_loop().create_future()
    events: list[str] = []
    writer = PipeWriter(write_end, lambda: events.append("pause"), lambda: resumed.set_result(1))
    writer.write(b"x" * 2_000_000)  # more than the pipe holds: kept
    assert events == ["pause"]
    os.close(read_end)  # the loop's writability callback finds EPIPE
    await asyncio.wait_for(resumed, 30)
    assert writer.size == 0
    writer.write(b"more")  # dropped, no error
    writer.close()
    os.close(write_end)


async def test_large_bytes_and_str_go_out_unjoined_and_arrive_whole() -> None:
    text = "a\udcff" * 40_000 + "é" * 10_000  # a lone surrogate travels too
    values: list[object] = [bytes(range(256)) * 4096, text, b"z" * _wire.LARGE_FRAME]
    assert all(_wire.dumps_bulk(value) is not None for value in values)
    for value in values:
        head, body = _wire.dumps_bulk(value)  # type: ignore[misc]
        assert head + body == _wire.dumps(value)
    assert _wire.dumps_bulk(b"z" * (_wire.LARGE_FRAME - 1)) is None
    assert _wire.dumps_bulk([b"z" * _wire.LARGE_FRAME]) is None
    async with asyncgw.Group() as group:
        gateway = await group.makegateway("popen")
        channel = gateway.remote_exec("for item in channel:\n    channel.send(item)\n")
        for value in values:
            await channel.send(value)
        for value in values:
            assert await channel.receive() == value
        channel.close()
        await channel.waitclose(timeout=30)


async def test_a_large_bytes_value_over_max_frame_is_refused_before_anything_goes() -> None:
    async with asyncgw.Group() as group:
        gateway = await group.makegateway("popen//max_frame=100000")
        channel = gateway.remote_exec("channel.send(channel.receive())")
        with pytest.raises(asyncgw.DumpError, match="exceeds the gateway's max_frame"):
            await channel.send(b"x" * 100_000)
        await channel.send(b"y" * 99_995)  # exactly max_frame with its head
        assert await channel.receive() == b"y" * 99_995


async def test_a_worker_killed_while_the_writer_holds_data_is_lost_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The pipe closes under a writer waiting for room: the gateway is lost,
    the loop logs no error, and the next gateways write their pipes fine."""
    async with asyncgw.Group() as group:
        gateway = await group.makegateway("popen")
        pid = (await gateway.remote_info()).pid
        channel = gateway.remote_exec("import time; time.sleep(60)")
        # Within the window: queued at once, the pipe takes 1 MiB, the writer keeps the rest.
        await channel.send(b"x" * (6 << 20))
        os.kill(pid, 9)
        with pytest.raises(asyncgw.GatewayError):
            async with asyncio.timeout(30):
                await channel.send(b"z")  # waits for room that never comes: the loss
                await channel.receive()
        for _ in range(3):
            other = await group.makegateway("popen")
            echo = other.remote_exec("channel.send(channel.receive())")
            await echo.send(b"y" * (3 << 20))
            assert await echo.receive() == b"y" * (3 << 20)
    assert not [r for r in caplog.records if "Exception in callback" in r.getMessage()]
