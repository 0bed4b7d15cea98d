"""Groups, ids and specs: execnet's Group documentation, in async form
(../shared/reference/000_0ff686605954e9af.txt), plus what asyncgw adds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest

import asyncgw

from .conftest import PYTHON39

pytestmark = pytest.mark.anyio


async def test_group_of_two_popen() -> None:
    group = asyncgw.Group(["popen"] * 2)
    async with group:
        assert len(group) == 2
        assert repr(group) == "<Group ['gw0', 'gw1']>"
        assert [gw.id for gw in group] == ["gw0", "gw1"]
        assert "gw0" in group and "gw1" in group
        assert group["gw0"] == group[0]
        assert group["gw1"] == group[1]
        assert repr(group[0]) == "<Gateway id='gw0' receive-live, thread model, 0 active channels>"
        await group.terminate()  # exit all member gateways
        assert repr(group) == "<Group []>"


async def test_assigning_gateway_ids(group: asyncgw.Group) -> None:
    gw = await group.makegateway("popen//id=sub1")
    assert gw.id == "sub1"
    assert group["sub1"] is gw


async def test_duplicate_id_is_an_error(group: asyncgw.Group) -> None:
    await group.makegateway("popen//id=sub1")
    with pytest.raises(asyncgw.SpecError, match="'sub1' is already in use"):
        await group.makegateway("popen//id=sub1")
    with pytest.raises(asyncgw.SpecError, match="'twin' is already in use"):
        await group.makegateways(["popen//id=twin", "popen//id=twin"])
    assert [gw.id for gw in group] == ["sub1"]


async def test_allocate_id_before_instantiation(group: asyncgw.Group) -> None:
    spec = asyncgw.XSpec("popen")
    group.allocate_id(spec)
    allocated_id = spec.id
    assert allocated_id == "gw0"
    gw = await group.makegateway(spec)
    assert gw.id == allocated_id
    assert (await group.makegateway()).id == "gw1"


async def test_makegateway_uses_default_group() -> None:
    gw = await asyncgw.makegateway()
    try:
        assert gw in asyncgw.default_group
        assert asyncgw.default_group.defaultspec == "popen"
    finally:
        await asyncgw.default_group.terminate(timeout=5)
    assert gw not in asyncgw.default_group


async def test_robust_termination_of_a_sleeper() -> None:
    group = asyncgw.Group()
    gw = await group.makegateway("popen//id=sleeper")
    gw.remote_exec("import time ; time.sleep(2.0)")
    assert repr(group) == "<Group ['sleeper']>"
    await group.terminate(timeout=1.0)
    assert repr(group) == "<Group []>"
    assert not gw.is_alive


async def test_defaultspec_with_chdir_and_nice(tmp_path: Path) -> None:
    target = tmp_path / "mytmp"
    async with asyncgw.Group() as group:
        group.defaultspec = f"popen//chdir={target}//nice=5"
        gw = await group.makegateway()
        channel = gw.remote_exec(
            """
            import os.path
            basename = os.path.basename(os.getcwd())
            channel.send((basename, os.nice(0)))
            """
        )
        assert await channel.receive() == ("mytmp", os.nice(0) + 5)
    assert target.is_dir()


async def test_env_and_dont_write_bytecode(group: asyncgw.Group) -> None:
    gw = await group.makegateway("popen//env:ASYNCGW_TEST=hello//dont_write_bytecode")
    channel = gw.remote_exec(
        "import os, sys; channel.send((os.environ['ASYNCGW_TEST'], sys.dont_write_bytecode))"
    )
    assert await channel.receive() == ("hello", True)


#: An older interpreter than ours, to show python= reaching any Python >= 3.9.
@pytest.mark.python("3.9")  # skips, or fails in CI, where no 3.9 is found
async def test_python_key_starts_that_interpreter(group: asyncgw.Group) -> None:
    python39 = PYTHON39
    gw = await group.makegateway(f"popen//python={python39}")
    assert tuple((await gw.remote_info()).version_info[:2]) == (3, 9)
    channel = gw.remote_exec("await channel.send(sum(await channel.receive()))")
    await channel.send([1, 2, 3])
    assert await channel.receive() == 6


async def test_makegateways_is_all_or_nothing(group: asyncgw.Group) -> None:
    me = psutil.Process()
    before = {child.pid for child in me.children(recursive=True)}  # session servers, say
    with pytest.raises(asyncgw.HostNotFound, match="/nonexistent/python"):
        await group.makegateways(["popen", "popen//python=/nonexistent/python", "popen"])
    assert len(group) == 0
    children = me.children(recursive=True)
    assert not [p for p in children if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
    gws = await group.makegateways(["popen"] * 3)
    assert [gw.id for gw in gws] == [gw.id for gw in group]


async def test_group_remote_exec_multichannel(group: asyncgw.Group) -> None:
    await group.makegateways(["popen"] * 3)
    mch = group.remote_exec("import os; channel.send(os.getpid()); channel.send(channel.receive())")
    assert len(mch) == 3
    pids = await mch.receive_each()
    assert pids == [gw.remote_pid for gw in group]
    await mch.send_each("x")
    pairs = await mch.receive_each(withchannel=True)
    assert [value for _, value in pairs] == ["x"] * 3
    assert [channel for channel, _ in pairs] == list(mch)
    await mch.waitclose(timeout=10)


async def test_multichannel_receive_queue(group: asyncgw.Group) -> None:
    await group.makegateways(["popen"] * 2)
    mch = group.remote_exec("channel.send(channel.gateway.id)")
    queue = mch.make_receive_queue(endmarker=None)
    seen = {}
    for _ in range(4):
        channel, value = await queue.get()
        seen.setdefault(channel.gateway.id, []).append(value)
    assert seen == {"gw0": ["gw0", None], "gw1": ["gw1", None]}


async def test_unknown_transport_and_bad_specs(group: asyncgw.Group) -> None:
    with pytest.raises(asyncgw.SpecError, match="'bogus'"):
        await group.makegateway("popen//bogus=1")
    with pytest.raises(asyncgw.SpecError, match="'nice'"):
        await group.makegateway("popen//nice=high")
    with pytest.raises(asyncgw.SpecError, match="'socket' wants host:port"):
        await group.makegateway("socket=localhost")
    assert len(group) == 0


async def test_bootstrap_failure_names_the_cause(group: asyncgw.Group, tmp_path: Path) -> None:
    chdir_target = tmp_path / "file"
    chdir_target.write_text("not a directory")
    with pytest.raises(asyncgw.BootstrapError, match="worker failed to start"):
        await group.makegateway(f"popen//chdir={chdir_target}")
    impostor = tmp_path / "impostor"
    impostor.write_text("#!/bin/sh\necho 'Welcome to a shell banner'\nsleep 5\n")
    impostor.chmod(0o755)
    with pytest.raises(asyncgw.BootstrapError, match="Welcome to a shell banner"):
        await group.makegateway(f"popen//python={impostor}")
    assert len(group) == 0


async def test_protocol_version_mismatch_is_refused(group: asyncgw.Group, tmp_path: Path) -> None:
    """A worker of another protocol version (an old socket server, say) is
    refused with a clear error instead of being fed frames it misreads."""
    old_worker = tmp_path / "old-worker"
    old_worker.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "from asyncgw import _wire\n"
        "hello = _wire.dumps({'protocol': 999, 'pid': 1})\n"
        "sys.stdout.buffer.write(_wire.MAGIC + _wire.encode_frame(_wire.HELLO, 0, hello))\n"
        "sys.stdout.flush()\n"
        "sys.stdin.read()\n"
    )
    old_worker.chmod(0o755)
    with pytest.raises(asyncgw.BootstrapError, match="protocol version 999, this side 1"):
        await group.makegateway(f"popen//python={old_worker}")
    assert len(group) == 0
