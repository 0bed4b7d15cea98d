"""ssh gateways against an in-process asyncssh server: sharing, limits,
and a distinct error for each way of failing to connect."""

from __future__ import annotations

import socket
import sys
import time

import asyncssh
import pytest

import asyncgw
from asyncgw.transports import ssh as ssh_transport
from asyncgw.transports import sshpool

from .conftest import ssh_address
from .sshserver import Keys, ssh_server

pytestmark = pytest.mark.anyio

PYTHON = f"//python={sys.executable}"


async def test_gateways_to_one_host_share_a_connection(ssh_keys: Keys) -> None:
    async with ssh_server(ssh_keys) as (port, stats), asyncgw.Group() as group:
        gws = await group.makegateways([ssh_address(ssh_keys, port) + PYTHON] * 8)
        pids = await group.remote_exec("import os; channel.send(os.getpid())").receive_each()
        assert len(set(pids)) == 8
        assert stats.connections == 1
        # 8 exec sessions, and the fork server tried for the second one:
        # this server refuses streamlocal channels (test_ssh_forkserver.py).
        assert stats.sessions == 8 + 1
        assert all(gw.is_alive for gw in gws)


async def test_session_cap_opens_another_connection(
    ssh_keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sshpool.limits, "max_sessions", 3)
    async with ssh_server(ssh_keys) as (port, stats), asyncgw.Group() as group:
        await group.makegateways([ssh_address(ssh_keys, port) + PYTHON] * 7)
        assert stats.connections == 3  # 3 + 3 + 1 sessions
        await group.terminate(timeout=5)
        # The last session of a connection closes it; a new gateway reconnects.
        await group.makegateway(ssh_address(ssh_keys, port) + PYTHON)
        assert stats.connections == 4


async def test_unknown_host_key_is_refused(ssh_keys: Keys) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    async with ssh_server(ssh_keys) as (port, _), asyncgw.Group() as group:
        wrong = ssh_keys.directory / f"wrong-known-hosts-{port}"
        wrong.write_text(f"[127.0.0.1]:{port} {other}")
        spec = f"ssh=127.0.0.1:{port}//ssh_identity={ssh_keys.user_key_path}"
        with pytest.raises(asyncgw.HostKeyError, match="not verified"):
            await group.makegateway(f"{spec}//ssh_known_hosts={wrong}{PYTHON}")
        # Turning verification off is possible, and visible in the spec.
        gw = await group.makegateway(f"{spec}//ssh_known_hosts=none{PYTHON}")
        assert await gw.remote_exec("channel.send(1)").receive() == 1


async def test_refused_authentication(ssh_keys: Keys) -> None:
    stranger = ssh_keys.directory / "id_stranger"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(stranger))
    async with ssh_server(ssh_keys) as (port, _), asyncgw.Group() as group:
        spec = ssh_address(ssh_keys, port).replace(str(ssh_keys.user_key_path), str(stranger))
        with pytest.raises(asyncgw.AuthenticationError, match="refused authentication"):
            await group.makegateway(spec + PYTHON)


async def test_unreachable_port_fails_within_the_timeout(ssh_keys: Keys) -> None:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with asyncgw.Group() as group:
        started = time.monotonic()
        with pytest.raises(asyncgw.HostNotFound, match=f"127.0.0.1:{port}"):
            await group.makegateway(f"{ssh_address(ssh_keys, port)}//connect_timeout=5")
        assert time.monotonic() - started < 5 + 3


async def test_missing_remote_python(ssh_keys: Keys) -> None:
    async with ssh_server(ssh_keys) as (port, _), asyncgw.Group() as group:
        with pytest.raises(asyncgw.BootstrapError, match="exit status 127"):
            await group.makegateway(f"{ssh_address(ssh_keys, port)}//python=no-such-python3")


def test_bad_addresses() -> None:
    with pytest.raises(asyncgw.SpecError, match="bad port"):
        ssh_transport._target(asyncgw.XSpec("ssh=host:http"))
    for options in ("-p 2222 host", "host -o Port=2222"):
        with pytest.raises(asyncgw.SpecError, match="not ssh command-line options") as info:
            ssh_transport._target(asyncgw.XSpec(f"ssh={options}"))
        assert options in str(info.value) and "ssh=host:2222" in str(info.value)
    target = ssh_transport._target(asyncgw.XSpec("ssh=me@[::1]:2222"))
    assert (target.user, target.host, target.port) == ("me", "::1", 2222)


async def test_jump_host(ssh_keys: Keys) -> None:
    async with (
        ssh_server(ssh_keys) as (jump_port, jump_stats),
        ssh_server(ssh_keys) as (port, stats),
        asyncgw.Group() as group,
    ):
        # One known_hosts file that knows both servers.
        known = ssh_keys.directory / f"both-{jump_port}-{port}"
        known.write_text(
            ssh_keys.known_hosts(jump_port).read_text() + ssh_keys.known_hosts(port).read_text()
        )
        spec = (
            f"ssh=127.0.0.1:{port}//ssh_jump=127.0.0.1:{jump_port}"
            f"//ssh_identity={ssh_keys.user_key_path}//ssh_known_hosts={known}{PYTHON}"
        )
        gw = await group.makegateway(spec)
        assert await gw.remote_exec("channel.send('through')").receive() == "through"
        assert (jump_stats.connections, jump_stats.sessions) == (1, 0)
        assert (stats.connections, stats.sessions) == (1, 1)


async def test_ssh_config_file(ssh_keys: Keys) -> None:
    async with ssh_server(ssh_keys) as (port, _), asyncgw.Group() as group:
        config = ssh_keys.directory / f"config-{port}"
        config.write_text(
            f"Host testbox\n  HostName 127.0.0.1\n  Port {port}\n"
            f"  IdentityFile {ssh_keys.user_key_path}\n"
            f"  UserKnownHostsFile {ssh_keys.known_hosts(port)}\n"
        )
        gw = await group.makegateway(f"ssh=testbox//ssh_config={config}{PYTHON}")
        assert await gw.remote_exec("channel.send('configured')").receive() == "configured"


def test_a_key_file_is_loaded_once_while_it_does_not_change(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "id_ed25519"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(path))
    first = sshpool._load_identity(str(path))
    assert sshpool._load_identity(str(path)) is first  # a fleet's connections share it
    other = asyncssh.generate_private_key("ssh-ed25519")
    other.write_private_key(str(path))  # replaced: loaded again
    again = sshpool._load_identity(str(path))
    assert again is not first
    assert again[0].public_data == other.public_data
    path.write_text("not a key")
    with pytest.raises(asyncgw.SpecError, match="ssh_identity"):
        sshpool._load_identity(str(path))
