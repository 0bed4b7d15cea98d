"""ssh gateways forked by a fork server on the host: the first gateway of a
connection is started through sshd, the later ones forked there and reached
over direct-streamlocal channels of the same connection; without
streamlocal forwarding, every gateway is started as before.

Fast tests run against an in-process asyncssh server (one that forwards to
Unix sockets, and the suite's own, which refuses); the end-to-end ones
against OpenSSH's sshd, with and without ``AllowStreamLocalForwarding``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest

import asyncgw
from asyncgw.transports import sshfork, sshpool
from asyncgw.transports.ssh import SSHTransport, _target

from .conftest import root_required, ssh_address, wait_gone
from .realsshd import require_sshd, run_sshd
from .sshserver import Keys, Stats, _run, _Server
from .test_sshd import Sshd, _free_port

pytestmark = pytest.mark.anyio

PYTHON = f"//python={sys.executable}"
#: An interpreter another user may run (ours lives under /root).
CO_TENANT_PYTHON = "/usr/bin/python3"
WHO = "import os; channel.send((os.getpid(), os.getppid(), os.getcwd(), os.environ.get('MARK')))"


class _ForwardingServer(_Server):
    """The suite's in-process server, forwarding to Unix sockets as sshd does."""

    def unix_connection_requested(self, dest_path: str) -> bool:
        return True


@contextlib.asynccontextmanager
async def forwarding_server(keys: Keys) -> AsyncIterator[tuple[int, Stats]]:
    stats = Stats()
    server = await asyncssh.create_server(
        lambda: _ForwardingServer(stats),
        "127.0.0.1",
        0,
        server_host_keys=[keys.host_key],
        authorized_client_keys=str(keys.directory / "id_user.pub"),
        process_factory=lambda process: _run(stats, process),
        encoding=None,
    )
    try:
        yield server.sockets[0].getsockname()[1], stats
    finally:
        server.close()
        await server.wait_closed()
        for child in stats.children:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, 9)
                await child.wait()


def fork_server_of(gw: asyncgw.Gateway) -> sshfork.RemoteForkServer:
    transport = gw._transport
    assert isinstance(transport, sshfork.ForkedSSHTransport), transport
    return transport._server


async def who(gw: asyncgw.Gateway) -> tuple[int, int, str, str | None]:
    pid, ppid, cwd, mark = await gw.remote_exec(WHO).receive(timeout=10)
    return pid, ppid, cwd, mark


def tried_server(gw: asyncgw.Gateway) -> sshfork.RemoteForkServer:
    """The fork server started (or tried) on ``gw``'s connection."""
    connection = sshpool._pool().connections[_target(gw.spec)][0]
    entry: sshfork._Entry = next(iter(connection.extras[sshfork.EXTRAS_KEY].values()))
    assert entry.server is not None and entry.server.done()
    server = entry.server.result()
    assert server is not None and server.pid is not None
    return server


async def ended(server: sshfork.RemoteForkServer) -> None:
    """Wait until ``server`` has exited; fail unless its directory went with it."""
    assert server.pid is not None
    await wait_gone([server.pid])
    gone(os.path.dirname(server.path))


def kept(path: str) -> None:
    assert os.path.isdir(path), f"{path} was removed"


def gone(path: str) -> None:
    """Fail if ``path`` exists (its remover is gone: call after ``wait_gone``)."""
    assert not os.path.lexists(path), f"{path} is still there"


# -- against an in-process server


async def test_later_gateways_are_forked_on_the_host(ssh_keys: Keys, tmp_path: Path) -> None:
    async with forwarding_server(ssh_keys) as (port, stats):
        async with asyncgw.Group() as group:
            spec = ssh_address(ssh_keys, port) + PYTHON
            # A lone gateway is started by sshd, as before: it pays for nothing more.
            first = await group.makegateway(spec)
            assert type(first._transport) is SSHTransport
            assert stats.sessions == 1
            specs = [f"{spec}//chdir={tmp_path}//env:MARK=m{n}" for n in range(3)]
            gws = await group.makegateways(specs)
            answers = [await who(gw) for gw in gws]
            server = fork_server_of(gws[0])
            assert all(fork_server_of(gw) is server for gw in gws)
            assert [ppid for _, ppid, _, _ in answers] == [server.pid] * 3
            for n, (pid, _, cwd, mark) in enumerate(answers):
                assert pid == gws[n].remote_pid
                assert (cwd, mark) == (str(tmp_path), f"m{n}")  # config applied after the fork
            assert (stats.connections, stats.sessions) == (1, 2)  # the first gateway, the server
            # A later gateway is forked too.
            later = await group.makegateway(spec)
            assert (await who(later))[1] == server.pid
            directory = os.path.dirname(server.path)
            info = os.lstat(directory)
            assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
            assert stat.S_ISSOCK(os.lstat(server.path).st_mode)
            pids: list[int | None] = [answer[0] for answer in answers]
            pids += [first.remote_pid, later.remote_pid, server.pid]
        # The connection closed with its last gateway: the fork server, its
        # socket and directory with it, and every worker (while the server
        # is up: its teardown kills what is left).
        await wait_gone(pids)
        gone(directory)


async def test_a_forked_worker_reports_its_exit_status(ssh_keys: Keys) -> None:
    async with forwarding_server(ssh_keys) as (port, _):
        async with asyncgw.Group() as group:
            gws = await group.makegateways([ssh_address(ssh_keys, port) + PYTHON] * 2)
            server = fork_server_of(gws[1])
            channel = gws[1].remote_exec("import os; os._exit(7)")
            with pytest.raises(
                asyncgw.GatewayLost, match=r"forked there as pid \d+, exit status 7"
            ):
                await channel.receive(timeout=10)
            assert gws[1]._transport is not None and gws[1]._transport.exit_status() == 7
            assert await gws[0].remote_exec("channel.send(1)").receive(timeout=10) == 1
        await ended(server)


async def test_stubborn_forked_worker_is_killed_at_terminate(ssh_keys: Keys) -> None:
    async with forwarding_server(ssh_keys) as (port, _):
        group = asyncgw.Group()
        spec = ssh_address(ssh_keys, port) + PYTHON
        gws = await group.makegateways([spec, f"{spec}//execmodel=main_thread_only"])
        server = fork_server_of(gws[1])
        channel = gws[1].remote_exec(
            "import os, signal, subprocess, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "child = subprocess.Popen(['sleep', '1000'])\n"  # in the worker's group
            "channel.send(child.pid)\n"
            "time.sleep(1000)\n"
        )
        grandchild = await channel.receive(timeout=10)
        worker = gws[1].remote_pid
        async with asyncio.timeout(20):
            await group.terminate(timeout=0.5)
        await wait_gone([worker, grandchild])
        await ended(server)


async def test_a_lost_fork_server_leaves_its_workers_and_later_ones_start(
    ssh_keys: Keys,
) -> None:
    async with forwarding_server(ssh_keys) as (port, stats), asyncgw.Group() as group:
        spec = ssh_address(ssh_keys, port) + PYTHON
        gws = await group.makegateways([spec] * 3)
        server = fork_server_of(gws[1])
        assert server.pid is not None
        os.kill(server.pid, 9)
        await wait_gone([server.pid])
        # Killed, it could not remove its directory: this test does.
        shutil.rmtree(os.path.dirname(server.path))
        assert await gws[2].remote_exec("channel.send(2)").receive(timeout=10) == 2
        fresh = await group.makegateway(spec)
        assert type(fresh._transport) is SSHTransport and server.lost
        assert await fresh.remote_exec("channel.send(3)").receive(timeout=10) == 3
        assert stats.sessions == 2  # the fork server (all 3 forked), the fresh one


def _dead_server_directory(age: float) -> str:
    """What a killed fork server leaves: its directory, ``age`` seconds old,
    and a socket nobody listens on."""
    path = os.path.join("/tmp", "asyncgw-" + os.urandom(8).hex())
    os.mkdir(path, 0o700)
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(os.path.join(path, "forkserver"))
    then = time.time() - age
    os.utime(path, (then, then))
    return path


async def test_a_killed_fork_servers_directory_is_removed_by_the_next(ssh_keys: Keys) -> None:
    stale, young = _dead_server_directory(600), _dead_server_directory(0)
    try:
        async with forwarding_server(ssh_keys) as (port, _):
            async with asyncgw.Group() as group:
                gws = await group.makegateways([ssh_address(ssh_keys, port) + PYTHON] * 2)
                server = fork_server_of(gws[0])
            await ended(server)
        gone(stale)
        kept(young)  # it may be a fork server still starting
    finally:
        shutil.rmtree(young)
        shutil.rmtree(stale, ignore_errors=True)


async def test_without_streamlocal_every_gateway_is_started(ssh_keys: Keys) -> None:
    # The suite's server refuses Unix socket forwarding, as sshd configured so does.
    from .sshserver import ssh_server

    async with ssh_server(ssh_keys) as (port, stats):
        async with asyncgw.Group() as group:
            spec = ssh_address(ssh_keys, port) + PYTHON
            gws = await group.makegateways([spec] * 4)
            assert all(type(gw._transport) is SSHTransport for gw in gws)
            values = await group.remote_exec("channel.send(5)").receive_each()
            assert values == [5] * 4
            assert stats.sessions == 4 + 1  # and the one fork server tried
            tried = tried_server(gws[0])
            assert tried.lost
            more = await group.makegateways([spec] * 2)  # remembered: not tried again
            assert all(type(gw._transport) is SSHTransport for gw in more)
            assert stats.sessions == 4 + 1 + 2
        await ended(tried)


async def test_aes_gcm_is_preferred_unless_the_ssh_config_names_ciphers(
    ssh_keys: Keys, tmp_path: Path
) -> None:
    async with forwarding_server(ssh_keys) as (port, _):
        spec = ssh_address(ssh_keys, port)
        config = tmp_path / "config"
        config.write_text("Host *\n  Ciphers=chacha20-poly1305@openssh.com\n")
        for extra, cipher in (
            ("", "aes128-gcm@openssh.com"),
            (f"//ssh_config={config}", "chacha20-poly1305@openssh.com"),
        ):
            slot = await sshpool.acquire(_target(asyncgw.XSpec(spec + extra)), 10)
            try:
                assert slot.conn.get_extra_info("send_cipher") == cipher
            finally:
                slot.release()


# -- against OpenSSH's sshd


def _sshd(
    keys: Keys, factory: pytest.TempPathFactory, name: str, extra: str = ""
) -> Iterator[Sshd]:
    require_sshd()
    directory = factory.mktemp(name)
    port = _free_port()
    with run_sshd(keys, directory, "127.0.0.1", port, extra_config=extra) as log:
        yield Sshd(port, keys, log)


@pytest.fixture(scope="module")
def forwarding_sshd(ssh_keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    yield from _sshd(ssh_keys, tmp_path_factory, "sshd-fork")


@pytest.fixture(scope="module")
def closed_sshd(ssh_keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    yield from _sshd(ssh_keys, tmp_path_factory, "sshd-nofork", "AllowStreamLocalForwarding no\n")


def _sessions(sshd: Sshd) -> int:
    """Sessions sshd has started (exec requests) so far."""
    return sshd.log.read_text().count("Starting session: command")


async def test_sshd_eight_gateways_forked_by_one_fork_server(forwarding_sshd: Sshd) -> None:
    accepted, sessions = forwarding_sshd.accepted(), _sessions(forwarding_sshd)
    async with asyncgw.Group() as group:
        gws = await group.makegateways([forwarding_sshd.spec()] * 8)
        answers = [await who(gw) for gw in gws]
        assert len({pid for pid, _, _, _ in answers}) == 8
        server = fork_server_of(gws[1])
        # A batch: the first gateway had company queued, so it is forked too.
        assert [ppid for _, ppid, _, _ in answers] == [server.pid] * 8
        assert forwarding_sshd.accepted() - accepted == 1
        assert _sessions(forwarding_sshd) - sessions == 1  # the fork server's
        # A second group's lone gateway to the host rides the same connection.
        async with asyncgw.Group() as other:
            alone = await other.makegateway(forwarding_sshd.spec())
            assert (await who(alone))[1] == server.pid
        directory = os.path.dirname(server.path)
        assert stat.S_IMODE(os.lstat(directory).st_mode) == 0o700
        channel = gws[5].remote_exec("channel.send(channel.receive() * 2)")
        await channel.send(21)
        assert await channel.receive(timeout=10) == 42
        pids = [answer[0] for answer in answers] + [alone.remote_pid, server.pid]
    await wait_gone(pids)
    gone(directory)


async def test_sshd_without_streamlocal_forwarding_starts_every_gateway(
    closed_sshd: Sshd,
) -> None:
    async with asyncgw.Group() as group:
        gws = await group.makegateways([closed_sshd.spec()] * 3)
        assert all(type(gw._transport) is SSHTransport for gw in gws)
        pids = await group.remote_exec("import os; channel.send(os.getpid())").receive_each()
        assert len(set(pids)) == 3
        # The fork server that was tried is gone, and its directory with it.
        tried = tried_server(gws[0])
        assert tried.lost
        await ended(tried)
    await wait_gone(pids)


async def test_sshd_co_tenant_cannot_reach_the_socket(forwarding_sshd: Sshd) -> None:
    """What SECURITY.md says of another user on the host: the directory
    keeps them from the socket (they can neither list it nor connect)."""
    if os.geteuid() != 0:
        if root_required():
            pytest.fail("needs root (to act as another user), and this run requires it")
        pytest.skip("needs root, to act as another user")
    async with asyncgw.Group() as group:
        gws = await group.makegateways([forwarding_sshd.spec()] * 2)
        path = fork_server_of(gws[1]).path
        probe = (
            "import os, socket, sys\n"
            "try:\n    os.listdir(sys.argv[1].rpartition('/')[0])\n"
            "except PermissionError:\n    print('list refused')\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n    s.connect(sys.argv[1])\n"
            "except PermissionError:\n    print('connect refused')\n"
        )
        result = await asyncio.to_thread(
            subprocess.run,
            [CO_TENANT_PYTHON, "-I", "-c", probe, path],
            user="nobody",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.stdout.split("\n")[:2] == ["list refused", "connect refused"], result
        # The owner connects, but a connection that sends no request forks nothing.
        with socket.socket(socket.AF_UNIX) as own:
            own.connect(path)
            own.sendall(b"\x09" * 9)  # not a request frame: closed unread
            assert own.recv(1) == b""
        assert await gws[1].remote_exec("channel.send(1)").receive(timeout=10) == 1
