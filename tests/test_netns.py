"""Several hosts on one machine: each a network namespace with its own
address (a veth pair to this one) and its own sshd. Cutting one host's link
mid-session fails its gateways quickly while the others keep working. The
namespaces are removed at the end."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import asyncgw

from .hostfarm import HostFarm, host_farm, known_hosts_for, require_farm
from .sshserver import Keys

pytestmark = pytest.mark.anyio

HOSTS = 3


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def hosts(ssh_keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostFarm]:
    """Addresses of HOSTS namespaces, each running sshd on port 22."""
    require_farm()
    with host_farm(ssh_keys, HOSTS, tmp_path_factory.mktemp("netns-sshd")) as farm:
        yield farm


def _spec(keys: Keys, address: str) -> str:
    known = known_hosts_for(keys, [address], keys.directory / f"known-{address}")
    return (
        f"ssh=root@{address}//ssh_identity={keys.user_key_path}//ssh_known_hosts={known}"
        f"//python={sys.executable}//ssh_keepalive=0.5//connect_timeout=5"
    )


async def test_cutting_one_host_fails_only_its_gateways(hosts: HostFarm, ssh_keys: Keys) -> None:
    group = asyncgw.Group()
    try:
        specs = [_spec(ssh_keys, address) for address in hosts for _ in range(2)]
        gateways = await group.makegateways(specs)
        echoes = [gw.remote_exec("for x in channel: channel.send(x)") for gw in gateways]
        for echo in echoes:
            await echo.send("before")
            assert await echo.receive() == "before"
        cut, kept = echoes[2:4], echoes[:2] + echoes[4:]  # the second host's two

        pending = [asyncio.create_task(echo.receive()) for echo in cut]
        _ip("link", "set", hosts.links[1], "down")
        started = time.monotonic()
        for task in pending:
            with pytest.raises(asyncgw.GatewayLost):
                async with asyncio.timeout(15):
                    await task
        assert time.monotonic() - started < 10  # keepalive 0.5 s, 3 missed
        for echo in kept:  # the other hosts did not notice
            await echo.send("after")
            assert await echo.receive(timeout=10) == "after"
        with pytest.raises(asyncgw.GatewayLost):
            await cut[0].send("into the void")
    finally:
        _ip("link", "set", hosts.links[1], "up")
        await group.terminate(timeout=5)
