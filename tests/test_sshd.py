"""End to end against a real OpenSSH sshd on a loopback port, with default
MaxSessions and MaxStartups. The session starts its own server with
generated host and user keys; without sshd these tests skip, except where
``ASYNCGW_REQUIRE_SSHD`` is set (CI), where they fail instead."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import asyncgw

from .conftest import wait_gone
from .realsshd import require_sshd, run_sshd
from .sshserver import Keys

pytestmark = pytest.mark.anyio


@dataclass
class Sshd:
    port: int
    keys: Keys
    log: Path

    def spec(self, extra: str = "") -> str:
        return (
            f"ssh=root@127.0.0.1:{self.port}//ssh_identity={self.keys.user_key_path}"
            f"//ssh_known_hosts={self.keys.known_hosts(self.port, 'sshd-known')}"
            f"//python={sys.executable}{extra}"
        )

    def accepted(self) -> int:
        """Connections the server has authenticated so far."""
        return self.log.read_text().count("Accepted publickey")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def sshd(ssh_keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    require_sshd()
    directory = tmp_path_factory.mktemp("sshd")
    port = _free_port()
    with run_sshd(ssh_keys, directory, "127.0.0.1", port) as log:
        yield Sshd(port, ssh_keys, log)


async def test_eight_gateways_share_one_connection(sshd: Sshd) -> None:
    before = sshd.accepted()
    async with asyncgw.Group() as group:
        await group.makegateways([sshd.spec()] * 8)
        pids = await group.remote_exec("import os; channel.send(os.getpid())").receive_each()
        assert len(set(pids)) == 8
        assert sshd.accepted() - before == 1
        channel = group[3].remote_exec("channel.send(channel.receive() * 2)")
        await channel.send(21)
        assert await channel.receive() == 42
    await wait_gone(pids)  # terminated workers leave the server side too


async def test_past_max_sessions_another_connection_opens(sshd: Sshd) -> None:
    before = sshd.accepted()
    async with asyncgw.Group() as group:
        await group.makegateways([sshd.spec()] * 12)  # sshd's MaxSessions is 10
        values = await group.remote_exec("channel.send(1)").receive_each()
        assert values == [1] * 12
        assert sshd.accepted() - before == 2


async def test_wrong_host_key_is_refused(sshd: Sshd) -> None:
    wrong = sshd.keys.directory / "sshd-wrong-known"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {Keys.generate_public()}\n")
    spec = sshd.spec().replace(str(sshd.keys.known_hosts(sshd.port, "sshd-known")), str(wrong))
    async with asyncgw.Group() as group:
        with pytest.raises(asyncgw.HostKeyError):
            await group.makegateway(spec)


async def test_unreachable_port_errors_within_the_timeout(sshd: Sshd) -> None:
    spec = sshd.spec("//connect_timeout=3").replace(f":{sshd.port}/", f":{_free_port()}/")
    async with asyncgw.Group() as group:
        started = time.monotonic()
        with pytest.raises(asyncgw.HostNotFound):
            await group.makegateway(spec)
        assert time.monotonic() - started < 3 + 3


async def test_stubborn_remote_code_is_ended_by_terminate(sshd: Sshd) -> None:
    group = asyncgw.Group()
    gw = await group.makegateway(sshd.spec("//execmodel=main_thread_only"))
    channel = gw.remote_exec(
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "channel.send('ready')\n"
        "time.sleep(1000)\n"
    )
    assert await channel.receive() == "ready"
    started = time.monotonic()
    await group.terminate(timeout=0.5)  # no signals over ssh: the session closes
    assert time.monotonic() - started < 0.5 + 6
    await wait_gone([gw.remote_pid])


def remote_pid(x: int) -> tuple[int, int]:
    import os

    return x * x, os.getpid()


def test_an_executor_maps_over_real_sshd_gateways_and_popen(sshd: Sshd) -> None:
    """asyncgw.sync.Executor, a concurrent.futures.Executor, over two
    gateways through OpenSSH and one popen gateway: every item once, in
    order, work on every gateway, and the workers gone at shutdown."""
    from asyncgw.sync import Executor

    specs = [sshd.spec("//id=ssh1"), sshd.spec("//id=ssh2"), "popen//id=local"]
    with Executor(gateways=specs, chunksize=1) as executor:
        workers = executor.gateway_ids
        futures = [executor.submit(remote_pid, x) for x in range(60)]
        results = [future.result(timeout=60) for future in futures]
        mapped = list(executor.map(remote_pid, range(60), timeout=60))
    assert sorted(workers) == ["local", "ssh1", "ssh2"]
    assert [square for square, _ in results] == [x * x for x in range(60)]
    assert [square for square, _ in mapped] == [x * x for x in range(60)]
    pids = {pid for _, pid in results + mapped}
    assert len(pids) == 3, pids  # each gateway's worker took some of the work
    asyncio.run(wait_gone(list(pids)))  # shutdown ended them, ssh's too
