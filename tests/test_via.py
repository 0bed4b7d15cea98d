"""via gateways: started by another gateway, traffic routed through it."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import psutil
import pytest

import asyncgw

from .conftest import wait_gone

pytestmark = pytest.mark.anyio


async def test_makegateways_starts_proxies_first() -> None:
    async with asyncgw.Group() as group:
        gws = await group.makegateways(["via=head//id=w1", "popen//id=head", "via=head//id=w2"])
        assert [gw.id for gw in gws] == ["w1", "head", "w2"]
        pids = [gw.remote_pid for gw in gws]
        assert len(set(pids)) == 3
        # The workers are children of the head's interpreter, not of ours.
        head = psutil.Process(group["head"].remote_pid)
        assert {child.pid for child in head.children()} == {pids[0], pids[2]}


async def test_terminate_ends_proxied_gateways_before_their_proxies(tmp_path: Path) -> None:
    marker = tmp_path / "clean-exit"
    group = asyncgw.Group()
    await group.makegateways(["popen//id=head", "via=head//id=mid", "via=mid//id=leaf"])
    # The leaf finishes its code only when terminate ends its input; had a
    # proxy gone first, the leaf would have lost its stream and died at once.
    group["leaf"].remote_exec(
        f"""
        try:
            channel.receive()
        except EOFError:
            open({str(marker)!r}, "w").write("done")
        """
    )
    await group.terminate(timeout=10)
    assert marker.read_text() == "done"
    assert len(group) == 0


async def test_killed_proxy_fails_its_via_gateways_at_once(group: asyncgw.Group) -> None:
    head = await group.makegateway("popen//id=head")
    leaf = await group.makegateway("via=head//id=leaf")
    channel = leaf.remote_exec("channel.receive()")
    waiting = asyncio.create_task(channel.receive())
    assert head.remote_pid is not None and leaf.remote_pid is not None
    os.kill(head.remote_pid, signal.SIGKILL)
    with pytest.raises(asyncgw.GatewayLost, match="relay through gateway 'head'"):
        async with asyncio.timeout(10):
            await waiting
    await wait_gone([leaf.remote_pid])  # its stdin closed with the proxy: it exited
    with pytest.raises(asyncgw.GatewayLost):
        leaf.remote_exec("pass")


async def test_killing_a_via_gateway_leaves_the_proxy(group: asyncgw.Group) -> None:
    head = await group.makegateway("popen//id=head")
    leaf = await group.makegateway("via=head//id=leaf//execmodel=main_thread_only")
    channel = leaf.remote_exec(
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "channel.send('ready')\n"
        "time.sleep(1000)\n"
    )
    assert await channel.receive() == "ready"
    assert leaf.remote_pid is not None
    await leaf.exit(timeout=0.3)  # ignores SIGTERM: killed through the proxy
    await wait_gone([leaf.remote_pid])
    assert head.is_alive
    assert await head.remote_exec("channel.send(1)").receive() == 1


async def test_bad_via_specs(group: asyncgw.Group) -> None:
    with pytest.raises(asyncgw.SpecError, match="no gateway 'nowhere'"):
        await group.makegateway("via=nowhere")
    await group.makegateway("popen//id=head")
    with pytest.raises(asyncgw.HostNotFound, match="could not start"):
        await group.makegateway("via=head//python=/nonexistent/python")
    assert [gw.id for gw in group] == ["head"]
