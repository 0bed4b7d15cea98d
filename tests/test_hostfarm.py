"""The host farm itself (tests/hostfarm.py): every address is a host of its
own, reachable over SSH, with its own network; nothing is left after it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import asyncssh
import pytest

from .hostfarm import host_farm, known_hosts_for, require_farm
from .sshserver import Keys

pytestmark = pytest.mark.anyio

HOSTS = 4


def _left_behind(prefix: str) -> list[str]:
    """The namespaces and links here of the farm whose names start with
    ``prefix`` (then a kind letter: ``n``, ``o`` or ``i``)."""
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return [
        line
        for line in namespaces.splitlines() + links.splitlines()
        if re.match(rf"(\d+: )?{prefix}[noi]", line)
    ]


async def test_each_address_is_a_host_with_its_own_network(ssh_keys: Keys, tmp_path: Path) -> None:
    require_farm()
    with host_farm(ssh_keys, HOSTS, tmp_path / "farm", sshd_options="MaxSessions 4\n") as hosts:
        assert len(hosts) == len(set(hosts)) == HOSTS
        known = known_hosts_for(ssh_keys, hosts, tmp_path / "known_hosts")
        for address in hosts:
            async with asyncssh.connect(
                address,
                username="root",
                client_keys=[str(ssh_keys.user_key_path)],
                known_hosts=str(known),
            ) as conn:
                echo = await conn.run("echo ok", check=True)
                assert echo.stdout == "ok\n"
                addresses = await conn.run("ip -o addr show", check=True)
                assert isinstance(addresses.stdout, str)
                assert f"inet {address}/" in addresses.stdout
                others = [other for other in hosts if other != address]
                assert not any(f"inet {other}/" in addresses.stdout for other in others)
                async with conn.start_sftp_client() as sftp:  # hosts serve SFTP too
                    assert await sftp.isdir("/")
        prefix = hosts.prefix
    assert _left_behind(prefix) == []


def test_the_farm_is_removed_when_its_body_raises(ssh_keys: Keys, tmp_path: Path) -> None:
    require_farm()
    with pytest.raises(RuntimeError, match="body"), host_farm(ssh_keys, 2, tmp_path) as hosts:
        prefix = hosts.prefix
        raise RuntimeError("body")
    assert _left_behind(prefix) == []
