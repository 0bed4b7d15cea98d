"""The spec's ``max_frame``: the largest frame either side accepts.

An honest sender never writes a frame the peer would refuse (it raises
``DumpError`` and sends nothing); a peer that writes one anyway is cut off
as soon as the frame's header arrives, before its payload is buffered.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

import asyncgw

from .fakeworker import SKIP_BOOTSTRAP

pytestmark = pytest.mark.anyio

LIMIT = 64 * 1024

ECHO = """
for item in channel:
    channel.send(item)
"""


@pytest.mark.parametrize("spec", ["popen", "popen//id=proxy via=proxy"])
async def test_oversized_values_fail_at_the_local_sender(group: asyncgw.Group, spec: str) -> None:
    *proxies, target = spec.split(" ")
    for proxy in proxies:
        await group.makegateway(proxy)
    gw = await group.makegateway(f"{target}//max_frame={LIMIT}")
    channel = gw.remote_exec(ECHO)
    with pytest.raises(asyncgw.DumpError, match=f"exceeds the gateway's max_frame of {LIMIT}"):
        await channel.send(b"x" * LIMIT)
    # Nothing was sent and the channel still works, up to the limit.
    largest = b"y" * (LIMIT - 16)
    await channel.send(largest)
    assert await channel.receive(timeout=10) == largest
    with pytest.raises(asyncgw.DumpError, match="max_frame"):
        gw.remote_exec("x = %r" % ("z" * LIMIT))


async def test_oversized_values_fail_at_the_remote_sender(group: asyncgw.Group) -> None:
    gw = await group.makegateway(f"popen//max_frame={LIMIT}")
    channel = gw.remote_exec(f"channel.send(b'x' * {LIMIT})")
    with pytest.raises(asyncgw.RemoteError, match=f"max_frame of {LIMIT}"):
        await channel.receive(timeout=10)
    assert gw.is_alive


async def test_long_remote_tracebacks_are_clipped_to_fit(group: asyncgw.Group) -> None:
    gw = await group.makegateway(f"popen//max_frame={LIMIT}")
    channel = gw.remote_exec(f"raise ValueError('head' + 'x' * {4 * LIMIT} + 'tail')")
    with pytest.raises(asyncgw.RemoteError) as info:
        await channel.receive(timeout=10)
    text = str(info.value)
    assert "ValueError: head" in text and "cut to fit max_frame" in text
    assert len(text.encode()) <= LIMIT + 1024
    assert gw.is_alive


async def test_a_peer_writing_an_oversized_frame_is_cut_off(tmp_path: Path) -> None:
    """The header of a too-large frame is enough: the gateway is lost with
    an error naming both sizes, though the payload never arrives."""
    fake = tmp_path / "oversize-worker"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "from asyncgw import _wire\n"
        "hello = _wire.dumps({'protocol': _wire.PROTOCOL_VERSION, 'pid': os.getpid()})\n"
        "out = sys.stdout.buffer\n"
        "out.write(_wire.MAGIC + _wire.encode_frame(_wire.HELLO, 0, hello))\n"
        "out.flush()\n" + SKIP_BOOTSTRAP + "sys.stdin.buffer.read(1)  # wait for the first frame\n"
        f"out.write(_wire.HEADER.pack(_wire.DATA, 1, {LIMIT + 1}))  # a header only\n"
        "out.flush()\n"
        "sys.stdin.buffer.read()  # until end of input\n"
    )
    fake.chmod(0o755)
    async with asyncgw.Group(exit_timeout=2.0) as group:
        gw = await group.makegateway(f"popen//python={fake}//max_frame={LIMIT}")
        channel = gw.remote_exec("pass")
        with pytest.raises(asyncgw.GatewayLost, match=f"{LIMIT + 1} bytes exceeds .* {LIMIT}"):
            async with asyncio.timeout(10):
                await channel.receive()
        async with asyncio.timeout(10):
            await group.terminate(timeout=None)  # end of input ended the fake worker


async def test_the_worker_cuts_off_a_local_side_writing_an_oversized_frame(
    group: asyncgw.Group,
) -> None:
    from asyncgw import _wire

    gw = await group.makegateway(f"popen//max_frame={LIMIT}")
    channel = gw.remote_exec(ECHO)
    assert gw._router.transport is not None
    gw._router.transport.write(_wire.HEADER.pack(_wire.DATA, channel.id, LIMIT + 1))
    with pytest.raises(asyncgw.GatewayLost, match=f"exceeds the maximum of {LIMIT}"):
        await channel.receive(timeout=10)
