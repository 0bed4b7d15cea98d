"""Shared fixtures: the transport-parametrized ``gateway`` and the check
that no test leaves a child process behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

import asyncgw

from .socketserver import socket_server
from .sshserver import Keys, ssh_server

#: The oldest interpreter the worker supports, when this machine has it:
#: every transport-independent test also runs against it.
PYTHON39 = "/root/.pyenv/versions/3.9.18/bin/python3.9"

#: Specs of each transport the transport-independent tests run over: the
#: last one is the gateway under test, the ones before it what it needs
#: (the proxies of a via gateway).
TRANSPORT_SPECS: dict[str, list[str]] = {
    "popen": ["popen"],
    "cmd": [f"cmd=env ASYNCGW_TEST_TRANSPORT=cmd {sys.executable}"],
    "via": ["popen//id=proxy", "via=proxy"],
    "via-via": ["popen//id=proxy", "via=proxy//id=inner", "via=inner"],
    # {ssh}: the address and options of an in-process asyncssh server
    "ssh": [f"{{ssh}}//python={sys.executable}"],
    "ssh-via": [f"{{ssh}}//id=head//python={sys.executable}", "via=head"],
    # {socket}: the address, secret and pinned fingerprint of a fresh
    # asyncgw socket server (TLS; test_socket.py also covers plaintext)
    "socket": ["{socket}"],
    "socket-installvia": ["popen//id=host", "socket//installvia=host"],
}
if os.path.exists(PYTHON39):
    TRANSPORT_SPECS["popen-py3.9"] = [f"popen//python={PYTHON39}"]
    TRANSPORT_SPECS["via-py3.9"] = ["popen//id=proxy", f"via=proxy//python={PYTHON39}"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=sorted(TRANSPORT_SPECS))
def transport_specs(request: pytest.FixtureRequest) -> list[str]:
    return TRANSPORT_SPECS[request.param]


@pytest.fixture
async def group() -> AsyncIterator[asyncgw.Group]:
    async with asyncgw.Group(exit_timeout=2.0) as group:
        yield group


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys.generate(tmp_path_factory.mktemp("ssh-keys"))


def ssh_address(keys: Keys, port: int) -> str:
    """``ssh=...`` for an in-process server on ``port``, host key verified."""
    return (
        f"ssh=127.0.0.1:{port}//ssh_identity={keys.user_key_path}"
        f"//ssh_known_hosts={keys.known_hosts(port)}"
    )


@pytest.fixture
async def gateway(
    group: asyncgw.Group, transport_specs: list[str], ssh_keys: Keys, tmp_path: Path
) -> AsyncIterator[asyncgw.Gateway]:
    async with contextlib.AsyncExitStack() as stack:
        if any("{ssh}" in spec for spec in transport_specs):
            port, _ = await stack.enter_async_context(ssh_server(ssh_keys))
            transport_specs = [
                spec.replace("{ssh}", ssh_address(ssh_keys, port)) for spec in transport_specs
            ]
        if any("{socket}" in spec for spec in transport_specs):
            server = stack.enter_context(socket_server(tmp_path))
            transport_specs = [spec.replace("{socket}", server.spec()) for spec in transport_specs]
        for spec in transport_specs[:-1]:
            await group.makegateway(spec)
        yield await group.makegateway(transport_specs[-1])
        await group.terminate(timeout=2.0)  # while the server is still up


async def wait_gone(pids: list[int | None], timeout: float = 10.0) -> None:
    """Wait until none of ``pids`` runs (zombies count as gone); fail after
    ``timeout`` seconds. The processes need not be our children."""
    processes = []
    for pid in pids:
        assert pid is not None
        with contextlib.suppress(psutil.NoSuchProcess):
            processes.append(psutil.Process(pid))
    _, alive = await asyncio.to_thread(psutil.wait_procs, processes, timeout)
    alive = [proc for proc in alive if proc.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"still running: {[proc.pid for proc in alive]}"


@pytest.fixture(autouse=True)
def no_child_left() -> Iterator[None]:
    """Fail the test if a process it started outlives it (after a grace
    period for exiting processes to be reaped), and kill the survivors."""
    me = psutil.Process()
    before = {child.pid for child in me.children(recursive=True)}
    yield
    survivors = [child for child in me.children(recursive=True) if child.pid not in before]
    _, alive = psutil.wait_procs(survivors, timeout=5)
    alive = [proc for proc in alive if proc.status() != psutil.STATUS_ZOMBIE]
    for proc in alive:
        proc.kill()
    assert not alive, f"child processes left behind: {[_describe(proc) for proc in alive]}"


def _describe(proc: psutil.Process) -> object:
    try:
        return proc.cmdline()[:2]
    except psutil.Error:  # it has just gone
        return proc.pid
