"""Several hosts on one machine: each a network namespace with its own
address (a veth pair to this one) and its own sshd. Cutting one host's link
mid-session fails its gateways quickly while the others keep working. The
namespaces are removed at the end."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

import asyncgw

from .realsshd import require_sshd, run_sshd
from .sshserver import Keys

pytestmark = pytest.mark.anyio

HOSTS = 3
#: Names and a subnet of this test run's own, so that concurrent runs on
#: one machine do not collide.
PREFIX = f"agw{os.getpid() % 10000}"
SUBNET = f"10.{40 + os.getpid() % 200}"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _require_netns() -> None:
    if shutil.which("ip") is None or os.geteuid() != 0:
        if os.environ.get("ASYNCGW_REQUIRE_SSHD"):
            pytest.fail("network namespaces need root and iproute2 here")
        pytest.skip("network namespaces need root and iproute2")


@pytest.fixture(scope="module")
def hosts(ssh_keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Addresses of HOSTS namespaces, each running sshd on port 22."""
    require_sshd()
    _require_netns()
    addresses = []
    with ExitStack() as stack:
        for index in range(1, HOSTS + 1):
            netns, outside, inside = f"{PREFIX}h{index}", f"{PREFIX}o{index}", f"{PREFIX}i{index}"
            _ip("netns", "add", netns)
            stack.callback(_ip, "netns", "del", netns)  # takes its veth pair along
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", netns)
            _ip("addr", "add", f"{SUBNET}.{index}.1/24", "dev", outside)
            _ip("link", "set", outside, "up")
            _ip("-n", netns, "addr", "add", f"{SUBNET}.{index}.2/24", "dev", inside)
            _ip("-n", netns, "link", "set", inside, "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            address = f"{SUBNET}.{index}.2"
            directory = tmp_path_factory.mktemp(f"netns-sshd-{index}")
            stack.enter_context(run_sshd(ssh_keys, directory, address, 22, netns=netns))
            addresses.append(address)
        yield addresses
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert PREFIX not in leftover


def _spec(keys: Keys, address: str) -> str:
    known = keys.directory / f"known-{address}"
    public = keys.host_key.export_public_key().decode().strip()
    known.write_text(f"{address} {public}\n")
    return (
        f"ssh=root@{address}//ssh_identity={keys.user_key_path}//ssh_known_hosts={known}"
        f"//python={sys.executable}//ssh_keepalive=0.5//connect_timeout=5"
    )


async def test_cutting_one_host_fails_only_its_gateways(hosts: list[str], ssh_keys: Keys) -> None:
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
        _ip("link", "set", f"{PREFIX}o2", "down")
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
        _ip("link", "set", f"{PREFIX}o2", "up")
        await group.terminate(timeout=5)
