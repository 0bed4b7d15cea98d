"""The fleet over real OpenSSH sshds: a farm of network-namespace hosts
(tests/hostfarm.py), the session's loopback sshd (tests/test_sshd.py) and
sshds of the tests' own. Mixed outcomes on many hosts, shared and reused
connections, SFTP copies, sshd's limits (MaxStartups, a jump host) and the
tree fan-out through intermediate gateways.

Commands run over SSH are children of sshd, not of the test run: each test
marks its commands with a unique string and checks with psutil that no
process carrying it survives (the namespace hosts share our PID namespace).
Without sshd, root or iproute2 these tests skip; where
``ASYNCGW_REQUIRE_SSHD`` is set (CI) they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

import asyncgw
from asyncgw.fleet import Get, Host, Put, Remote, Report

from .conftest import wait_gone
from .hostfarm import host_farm, known_hosts_for, require_farm
from .realsshd import require_sshd, run_sshd
from .sshserver import Keys
from .test_fleet import BIG, make_sources, snapshot
from .test_sshd import Sshd, sshd  # noqa: F401 - the session's loopback sshd

pytestmark = pytest.mark.anyio

#: Hosts in the module's farm.
FARM_SIZE = 50
#: sshd_config for every sshd of these tests: root's login shell (bash)
#: skips ~/.bashrc when SHLVL is already 1, so that each command costs the
#: command, not the user's shell set-up.
FAST_SHELL = "SetEnv SHLVL=1\n"


@dataclass
class Farm:
    addresses: list[str]
    known_hosts: Path
    keys: Keys

    def params(self, **more: Any) -> dict[str, Any]:
        """Connection parameters for the farm's hosts."""
        return {
            "user": "root",
            "keyfile": str(self.keys.user_key_path),
            "known_hosts": str(self.known_hosts),
            "connect_timeout": 20,
            **more,
        }

    def hosts(self, count: int) -> list[Host]:
        return [Host(address) for address in self.addresses[:count]]


@pytest.fixture(scope="module")
def farm(ssh_keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    require_farm()
    directory = tmp_path_factory.mktemp("farm")
    with host_farm(ssh_keys, FARM_SIZE, directory, sshd_options=FAST_SHELL) as addresses:
        known = known_hosts_for(ssh_keys, addresses, directory / "known_hosts")
        yield Farm(list(addresses), known, ssh_keys)


def new_marker() -> str:
    return f"fleetmark{uuid.uuid4().hex[:12]}"


def marked_sleep(directory: Path, marker: str) -> Path:
    """``sleep`` under a name carrying ``marker``, so that psutil sees the
    marker in its command line too."""
    path = directory / f"sleep-{marker}"
    sleep = shutil.which("sleep")
    assert sleep is not None
    path.symlink_to(sleep)
    return path


async def none_left_with(marker: str) -> None:
    """No process with ``marker`` in its command line outlives the test
    (those that are exiting get 10 s)."""
    me = os.getpid()
    found = [
        process.pid
        for process in psutil.process_iter(["cmdline"])
        if process.pid != me and marker in " ".join(process.info["cmdline"] or ())
    ]
    await wait_gone(found)


def tcp_peers() -> set[tuple[str, int]]:
    """Where this process's established TCP connections go."""
    return {
        (connection.raddr.ip, connection.raddr.port)
        for connection in psutil.Process().net_connections(kind="tcp")
        if connection.status == psutil.CONN_ESTABLISHED and connection.raddr
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def loopback_known_hosts(keys: Keys, port: int, path: Path, names: list[str]) -> Path:
    public = keys.host_key.export_public_key().decode().strip()
    path.write_text("".join(f"[{name}]:{port} {public}\n" for name in names))
    return path


# -- (1) many hosts, mixed outcomes -------------------------------------------------


async def test_mixed_outcomes_on_many_hosts(farm: Farm, tmp_path: Path) -> None:
    marker = new_marker()
    sleeper = marked_sleep(tmp_path, marker)
    # Host 8 is in the first host's subnet, where nothing answers.
    first = farm.addresses[0]
    unreachable = first.rsplit(".", 1)[0] + ".77"
    hosts = [*farm.hosts(8), Host(unreachable)]
    commands = [  # noqa: F841 - read by {{commands}}
        "exit 0",
        "exit 0",
        "exit 1",
        "echo to-stderr >&2",
        "exit 7",
        f"{sleeper} 300 & echo $!; wait",
        "exit 0",
        "exit 0",
        "exit 0",
    ]
    # each host says it is itself (its own network), then runs its command
    command = (
        f": {marker}; ip -o -4 addr show | grep -q 'inet {{{{{{host}}}}}}/' "
        "&& echo on {{{host}}}; {{commands}}"
    )
    started = time.monotonic()
    async with Remote(command, hosts, farm.params(connect_timeout=10), timeout=4) as action:
        await action.run()
        elapsed = time.monotonic() - started
    processes = action.processes
    assert [p.host_name for p in processes] == [*farm.addresses[:8], unreachable]
    for index in (0, 1, 2, 3, 4, 6, 7):
        process = processes[index]
        assert process.ended and not process.error and not process.timeouted, process.dump()
        assert process.stdout == f"on {farm.addresses[index]}\n", process.dump()
    assert [processes[i].exit_code for i in (0, 1, 2, 3, 4, 6, 7)] == [0, 0, 1, 0, 7, 0, 0]
    assert processes[3].stderr == "to-stderr\n"
    assert [p.ok for p in processes] == [True, True, False, True, False, False, True, True, False]

    late = processes[5]
    assert late.timeouted and late.ended and not late.error and not late.ok
    lines = late.stdout.splitlines()
    assert lines[0] == f"on {farm.addresses[5]}"
    sleep_pid = int(lines[1])

    lost = processes[8]
    assert lost.error and lost.ended and not lost.timeouted and lost.exit_code is None
    assert lost.error_reason is not None and unreachable in lost.error_reason, lost.dump()

    stats = action.stats()
    assert {key: stats[key] for key in ("num_processes", "num_started", "num_ended")} == {
        "num_processes": 9,
        "num_started": 9,
        "num_ended": 9,
    }
    assert (stats["num_errors"], stats["num_timeouts"], stats["num_finished_ok"]) == (1, 1, 5)
    assert late.exit_code not in (0, None)  # stopped by a signal
    assert stats["num_non_zero_exit_codes"] == 3  # 1, 7 and the stopped one
    # the report's total line: started ended error timeout fkilled ret!=0 ok total
    total = Report(action).to_string().splitlines()[-1].split()[1:]
    assert total == ["9", "9", "1", "1", "0", "3", "5", "9"]
    assert elapsed < 4 + 2 + 4  # the timeout, SIGTERM's effect, slack
    await wait_gone([sleep_pid])
    await none_left_with(marker)


def loopback_params(sshd: Sshd, tmp_path: Path, names: list[str]) -> dict[str, object]:  # noqa: F811
    """Connection parameters for the loopback sshd under ``names``, as root
    with its key, the host keys known."""
    known = loopback_known_hosts(sshd.keys, sshd.port, tmp_path / "known", names)
    return {
        "user": "root",
        "port": sshd.port,
        "keyfile": str(sshd.keys.user_key_path),
        "known_hosts": str(known),
    }


# -- (2) connections: reuse and sharing -----------------------------------------------


async def test_rerun_and_a_gateway_reuse_the_connections(sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    names = ["127.0.0.1", "localhost"]  # two hosts, one sshd
    params = loopback_params(sshd, tmp_path, names)
    before = sshd.accepted()
    async with Remote("echo {{{host}}}", [Host(name) for name in names], params) as action:
        await action.run()
        assert action.finished_ok and [p.stdout for p in action.processes] == [
            "127.0.0.1\n",
            "localhost\n",
        ]
        assert sshd.accepted() - before == 2

        await action.reset().run()
        assert action.finished_ok and [p.stdout for p in action.processes] == [
            "127.0.0.1\n",
            "localhost\n",
        ]
        assert sshd.accepted() - before == 2  # no new connection

        async with Remote("echo other", Host("127.0.0.1"), params) as other:  # another action
            await other.run()
        assert other.finished_ok and other.processes[0].stdout == "other\n"
        assert sshd.accepted() - before == 2

        # A gateway to the same host, user and options rides the same connection.
        known = params["known_hosts"]
        spec = sshd.spec().replace(str(sshd.keys.known_hosts(sshd.port, "sshd-known")), str(known))
        assert f"ssh_identity={params['keyfile']}" in spec and f"ssh_known_hosts={known}" in spec
        async with asyncgw.Group() as group:
            gateway = await group.makegateway(spec)
            channel = gateway.remote_exec("channel.send(channel.receive() + 1)")
            await channel.send(41)
            assert await channel.receive() == 42
            assert sshd.accepted() - before == 2
            worker = gateway.remote_pid
        await wait_gone([worker])
    # Closed, the action let its connections go: a new run connects again.
    async with Remote("true", Host("127.0.0.1"), params) as again:
        await again.run()
    assert again.finished_ok
    assert sshd.accepted() - before == 3


async def test_cancelling_stops_the_command_over_ssh(sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    # The command ignores SIGTERM: it takes SIGKILL after kill_grace.
    marker = new_marker()
    sleeper = marked_sleep(tmp_path, marker)
    params = loopback_params(sshd, tmp_path, ["127.0.0.1"])
    command = f"trap '' TERM; {sleeper} 300 & echo $!; wait"
    async with Remote(command, Host("127.0.0.1"), params, kill_grace=0.5) as action:
        runner = asyncio.create_task(action.run())
        [(process, match)] = await action.expect(r"(\d+)\n", timeout=20)
        assert match is not None, process.dump()
        runner.cancel()
        stopping = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await runner
        assert time.monotonic() - stopping < 0.5 + 3
        assert process.ended and process.killed and process.ok
        await wait_gone([int(match.group(1))])
        await none_left_with(marker)
        assert process.forced_kill, process.dump()  # execo's: it took SIGKILL


async def test_a_plain_command_becomes_the_shell_and_stops_as_under_eval(
    sshd: Sshd,  # noqa: F811
    tmp_path: Path,
) -> None:
    # "PROGRAM" is exec'd by the login shell (no fork); ": ; PROGRAM" is
    # eval'd under the trap. Stopping either ends the same way.
    marker = new_marker()
    sleeper = marked_sleep(tmp_path, marker)
    gentle, stubborn = tmp_path / f"gentle-{marker}", tmp_path / f"stubborn-{marker}"
    gentle.write_text(f"#!/bin/sh\necho up\nexec {sleeper} 300\n")
    # stubborn ignores SIGTERM, and so takes SIGKILL after kill_grace
    stubborn.write_text(f"#!/bin/sh\ntrap '' TERM\necho up\nexec {sleeper} 300\n")
    for script in (gentle, stubborn):
        script.chmod(0o755)
    params = loopback_params(sshd, tmp_path, ["127.0.0.1"])
    host = Host("127.0.0.1")
    outcomes = {}
    for form in (f"{gentle}", f": ; {gentle}", f"{stubborn}", f": ; {stubborn}"):
        async with Remote(form, host, params, kill_grace=0.5) as action:
            action.start()
            [(process, match)] = await action.expect("up\n", timeout=20)
            assert match is not None, process.dump()
            await action.kill()
        assert process.killed and process.ended and process.stdout == "up\n", process.dump()
        outcomes[form] = (process.exit_code, process.forced_kill)
    assert outcomes == {
        f"{gentle}": (143, False),
        f": ; {gentle}": (143, False),
        f"{stubborn}": (137, True),
        f": ; {stubborn}": (137, True),
    }
    async with Remote("sh -c false", host, params) as failing:
        await failing.run()
    assert failing.processes[0].exit_code == 1 and not failing.ok
    await none_left_with(marker)


# -- (3) SFTP copies ------------------------------------------------------------------


@pytest.fixture(scope="module")
def whole_second_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sources(tmp_path_factory.mktemp("sources"), fraction=0.0)


async def test_put_get_over_sftp(farm: Farm, whole_second_sources: Path, tmp_path: Path) -> None:
    sources = whole_second_sources
    expected = snapshot(sources)
    hosts = farm.hosts(2)
    # The namespaces share our filesystem: {{{host}}} keeps the hosts apart.
    async with Put(
        hosts,
        [str(sources / "big.bin"), str(sources / "tree")],
        str(tmp_path / "remote" / "{{{host}}}"),
        farm.params(),
        create_dirs=True,
    ) as put:
        await put.run()
    assert put.finished_ok, [p.dump() for p in put.processes]
    assert all(p.transferred >= BIG for p in put.processes)  # type: ignore[attr-defined]
    for address in farm.addresses[:2]:
        assert snapshot(tmp_path / "remote" / address) == expected, address

    remote = f"{tmp_path}/remote/{{{{{{host}}}}}}"
    async with Get(
        hosts,
        [f"{remote}/big.bin", f"{remote}/tree"],
        str(tmp_path / "back" / "{{{host}}}"),
        farm.params(),
        create_dirs=True,
    ) as get:
        await get.run()
    assert get.finished_ok, [p.dump() for p in get.processes]
    for address in farm.addresses[:2]:
        assert snapshot(tmp_path / "back" / address) == expected, address


# -- (4) sshd's limits ------------------------------------------------------------------


async def test_fifty_hosts_on_one_sshd_past_maxstartups(ssh_keys: Keys, tmp_path: Path) -> None:
    # 127.0.0.2 .. 127.0.0.51 are 50 hosts to the pool (a handshake gate
    # each), all served by one sshd: it sees up to 50 handshakes at once,
    # far past MaxStartups' 10, and drops some; every host still succeeds.
    require_sshd()
    port = free_port()
    addresses = [f"127.0.0.{n}" for n in range(2, 52)]
    known = loopback_known_hosts(ssh_keys, port, tmp_path / "known", addresses)
    params = {
        "user": "root",
        "port": port,
        "keyfile": str(ssh_keys.user_key_path),
        "known_hosts": str(known),
        "connect_timeout": 60,
    }
    config = f"MaxStartups 10:30:100\n{FAST_SHELL}"
    with run_sshd(ssh_keys, tmp_path, "0.0.0.0", port, extra_config=config) as log:
        async with Remote("echo {{{host}}}", addresses, params) as action:
            await action.run()
        assert action.finished_ok, [p.dump() for p in action.processes if not p.ok]
        assert [p.stdout for p in action.processes] == [f"{a}\n" for a in addresses]
        text = log.read_text()
    assert text.count("Accepted publickey") == 50
    assert "past MaxStartups" in text  # sshd did drop handshakes


async def test_fifty_hosts_behind_one_jump_host(farm: Farm, sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    known = tmp_path / "known"
    public = sshd.keys.host_key.export_public_key().decode().strip()
    known.write_text(farm.known_hosts.read_text() + f"[127.0.0.1]:{sshd.port} {public}\n")
    params = farm.params(known_hosts=str(known), jump=f"root@127.0.0.1:{sshd.port}")
    before = sshd.accepted()
    command = "echo {{{host}}} $(ip -o -4 addr show | grep -c 'inet {{{host}}}/')"
    async with Remote(command, farm.hosts(FARM_SIZE), params) as action:
        await action.run()
        peers = tcp_peers()
        assert action.finished_ok, [p.dump() for p in action.processes if not p.ok]
        assert [p.stdout for p in action.processes] == [f"{a} 1\n" for a in farm.addresses]
        # Every host through the jump host: no connection of ours goes to one.
        assert not {ip for ip, _ in peers} & set(farm.addresses)
        assert ("127.0.0.1", sshd.port) in peers
        # One connection to the jump host carries them all.
        assert sshd.accepted() - before == 1


# -- (5) the tree --------------------------------------------------------------------


async def test_tree_fan_out_through_two_intermediates(
    farm: Farm,
    sshd: Sshd,  # noqa: F811
    tmp_path: Path,
) -> None:
    marker = new_marker()
    sleeper = marked_sleep(tmp_path, marker)
    names = ["127.0.0.1", "localhost"]  # two intermediates: two hosts, one sshd
    known = loopback_known_hosts(sshd.keys, sshd.port, tmp_path / "known", names)
    spec = sshd.spec().replace(str(sshd.keys.known_hosts(sshd.port, "sshd-known")), str(known))
    leaves = farm.hosts(10)
    before = sshd.accepted()
    async with asyncgw.Group() as group:
        await group.makegateways(
            [f"{spec}//id=i1", f"{spec.replace('@127.0.0.1:', '@localhost:')}//id=i2"]
        )
        assert sshd.accepted() - before == 2
        command = (
            f": {marker}; " + "echo {{{host}}} $(ip -o -4 addr show | grep -c 'inet {{{host}}}/')"
        )
        async with Remote(command, leaves, farm.params(), via=group) as action:
            await action.run()
            peers = tcp_peers()
        assert action.finished_ok, [p.dump() for p in action.processes if not p.ok]
        assert [p.host_name for p in action.processes] == farm.addresses[:10]
        assert [p.stdout for p in action.processes] == [f"{a} 1\n" for a in farm.addresses[:10]]
        # the leaves' connections are the intermediates', not ours
        assert not {ip for ip, _ in peers} & set(farm.addresses)
        assert sshd.accepted() - before == 2

        # A timeout through the tree stops the leaf's command and what it started.
        stuck = f": {marker}; {sleeper} 300 & echo $!; wait"
        async with Remote(stuck, leaves[:4], farm.params(), via=group, timeout=4) as action:
            action.start()
            assert all(match for _, match in await action.expect(r"\d+\n", timeout=20))
            # each leaf's ssh client runs under an intermediate, two each
            workers = {gateway.remote_pid: gateway.id for gateway in group}
            clients = [
                process
                for process in psutil.process_iter(["name", "cmdline"])
                if process.info["name"] == "ssh"
                and marker in " ".join(process.info["cmdline"] or ())
            ]
            relays = sorted(
                next(workers[a.pid] for a in client.parents() if a.pid in workers)
                for client in clients
            )
            assert relays == ["i1", "i1", "i2", "i2"]
            await action.wait()
        assert all(p.timeouted and p.ended and not p.error for p in action.processes), [
            p.dump() for p in action.processes
        ]
        await wait_gone([int(p.stdout.split()[0]) for p in action.processes])
        await none_left_with(marker)  # leaf shells, and the intermediates' ssh clients
    await wait_gone(list(workers))
    await none_left_with(marker)
