"""The slurm= transport and groups over an allocation, on a real single-node
Slurm (:mod:`tests.slurmcluster`: munged, slurmctld and slurmd started for
this module), and the buffering trap of cmd= gateways.

Every test ends with nothing of its own in ``squeue`` (no job, no step) and
no process it started; a driver run under ``salloc`` stands for a user's
script inside an allocation."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import asyncgw

from .slurmcluster import SlurmCluster, slurm  # noqa: F401 (the fixture)

pytestmark = pytest.mark.anyio

PYTHON = sys.executable
#: Drivers import the asyncgw under test (this tree's), not whichever is installed.
DRIVER_ENV = {"PYTHONPATH": str(Path(asyncgw.__file__).resolve().parent.parent)}


@pytest.fixture
def cluster(slurm: SlurmCluster) -> Iterator[SlurmCluster]:  # noqa: F811
    """The module's cluster, found by this process's srun; the queue is
    empty after each test (else the test fails)."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("SLURM_")}
    os.environ["SLURM_CONF"] = slurm.env["SLURM_CONF"]
    try:
        yield slurm
        slurm.wait_empty(timeout=20)
    finally:
        os.environ.pop("SLURM_CONF", None)
        os.environ.update(saved)


def _wait_until(condition: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- without Slurm


def test_slurm_argv_outside_and_inside_an_allocation() -> None:
    from asyncgw.transports.slurm import slurm_argv

    spec = asyncgw.XSpec("slurm=--partition=debug --time=10//python=python3")
    outside = slurm_argv(spec, environ={})
    assert outside[:5] == ["srun", "--unbuffered", "-v", "-N1", "-n1"]
    assert outside[5:8] == ["--partition=debug", "--time=10", "python3"]
    assert not any(arg.startswith(("--jobid", "--overlap")) for arg in outside)
    inside = slurm_argv(spec, environ={"SLURM_JOB_ID": "42"})
    assert inside[5:7] == ["--jobid=42", "--overlap"]
    own = slurm_argv(asyncgw.XSpec("slurm=--exclusive"), environ={"SLURM_JOB_ID": "42"})
    assert "--overlap" not in own and "--jobid=42" not in own
    assert asyncgw.XSpec("slurm").transport == "slurm"


def test_slurm_specs_over_a_node_list() -> None:
    environ = {"SLURM_JOB_NODELIST": "n[08-10],gpu1", "SLURM_TASKS_PER_NODE": "2(x3),1"}
    assert asyncgw.slurm_specs(environ=environ) == [
        f"slurm=--nodelist={node}//id={node}" for node in ("n08", "n09", "n10", "gpu1")
    ]
    per_task = asyncgw.slurm_specs(None, environ=environ, extra="python=python3")
    assert [spec.split("//")[1] for spec in per_task] == [
        "id=n08.0", "id=n08.1", "id=n09.0", "id=n09.1", "id=n10.0", "id=n10.1", "id=gpu1",
    ]  # fmt: skip
    assert all(spec.endswith("//python=python3") for spec in per_task)
    for spec in per_task:
        asyncgw.XSpec(spec).validate()
    with pytest.raises(asyncgw.SpecError, match="salloc or sbatch"):
        asyncgw.slurm_specs(environ={})
    with pytest.raises(asyncgw.SpecError, match="per_node"):
        asyncgw.slurm_specs(0, environ=environ)


#: A command that passes the worker's output on by whole lines, as srun
#: does without --unbuffered.
LINE_RELAY = """
import subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
for line in child.stdout:
    sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()
sys.exit(child.wait())
"""


async def test_cmd_that_buffers_by_lines_is_named(tmp_path: Path) -> None:
    relay = tmp_path / "relay.py"
    relay.write_text(LINE_RELAY)
    spec = f"cmd={PYTHON} {relay} {PYTHON}//connect_timeout=2"
    with pytest.raises(asyncgw.TimeoutError) as caught:
        await asyncgw.makegateway(spec)
    message = str(caught.value)
    assert "did not start within 2.0s" in message
    assert "line" in message and "--unbuffered" in message


# -- on the test cluster


async def test_slurm_gateway_is_a_job_step(cluster: SlurmCluster) -> None:
    gateway = await asyncgw.makegateway("slurm=--job-name=agw-step --time=5")
    try:
        job, step = await _slurm_ids(gateway)
        assert step == "0"
        assert f"{job} RUNNING None" in cluster.queue()
        assert f"{job}.0 python" in [line.split("_")[0] for line in cluster.steps()] or any(
            line.startswith(f"{job}.0 ") for line in cluster.steps()
        )
        assert "agw-step" in cluster.run("squeue", "-h", "-j", job, "-o", "%j").stdout
        # bulk both ways through srun
        channel = gateway.remote_exec("channel.send(channel.receive() * 2)")
        await channel.send(b"x" * (4 << 20))
        assert await channel.receive() == b"x" * (8 << 20)
    finally:
        await gateway.exit()
    _wait_until(lambda: not cluster.steps() and not cluster.queue(), "the job to end")


async def _slurm_ids(gateway: asyncgw.Gateway) -> tuple[str, str | None]:
    channel = gateway.remote_exec(
        "import os; channel.send((os.environ['SLURM_JOB_ID'], os.environ.get('SLURM_STEP_ID')))"
    )
    job, step = await channel.receive()
    return job, step


async def test_cmd_srun_without_unbuffered_names_the_flag(cluster: SlurmCluster) -> None:
    spec = f"cmd=srun -N1 -n1 {PYTHON}//connect_timeout=3"
    with pytest.raises(asyncgw.TimeoutError, match="srun needs --unbuffered"):
        await asyncgw.makegateway(spec)


def _hog(cluster: SlurmCluster) -> str:
    """An allocation of every CPU of the node, with no process: the job id."""
    result = cluster.run("salloc", "--no-shell", "-n8", "-t", "2", "-J", "hog")
    assert result.returncode == 0, result.stderr
    jobs = [line.split()[0] for line in cluster.queue() if "RUNNING" in line]
    assert len(jobs) == 1, cluster.queue()
    return jobs[0]


async def test_pending_step_times_out_on_the_queue_timeout(cluster: SlurmCluster) -> None:
    hog = _hog(cluster)
    try:
        started = time.monotonic()
        spec = "slurm=-J agw-wait//slurm_queue_timeout=3//connect_timeout=1"
        with pytest.raises(asyncgw.TimeoutError) as caught:
            await asyncgw.makegateway(spec)
        waited = time.monotonic() - started
        message = str(caught.value)
        assert "waited 3.0s in Slurm's queue" in message
        assert "PENDING" in message and "Resources" in message
        assert waited >= 3.0  # the queue timeout applied, not connect_timeout's 1 s
    finally:
        cluster.run("scancel", hog)


async def test_pending_step_starts_once_resources_free(cluster: SlurmCluster) -> None:
    hog = _hog(cluster)
    try:
        spec = "slurm=-J agw-late//slurm_queue_timeout=60//connect_timeout=2"
        opening = asyncio.create_task(asyncgw.makegateway(spec))
        await asyncio.to_thread(
            _wait_until,
            lambda: any(line.endswith("PENDING Resources") for line in cluster.queue()),
            "the gateway's job to wait for resources",
        )
        # Not synchronisation: the point is to stay pending longer than
        # connect_timeout (2 s) and see that the start is not failed for it.
        await asyncio.sleep(2.5)
        assert not opening.done()
        cluster.run("scancel", hog)
        gateway = await opening
        job, _ = await _slurm_ids(gateway)
        assert job != hog
        await gateway.exit()
    finally:
        cluster.run("scancel", hog)


async def test_scancel_ends_the_gateway_with_the_cause(cluster: SlurmCluster) -> None:
    gateway = await asyncgw.makegateway("slurm=-J agw-cancel")
    job, _ = await _slurm_ids(gateway)
    channel = gateway.remote_exec("channel.send('busy'); import time; time.sleep(600)")
    assert await channel.receive() == "busy"
    assert cluster.run("scancel", job).returncode == 0
    with pytest.raises(asyncgw.GatewayLost) as caught:
        async with asyncio.timeout(20):
            await channel.receive()
    assert "CANCELLED" in str(caught.value), str(caught.value)
    await gateway.wait_closed()
    srun = gateway._transport.pid if gateway._transport else None
    assert srun is not None
    await asyncio.to_thread(_wait_until, lambda: not psutil.pid_exists(srun), "srun to exit")


DRIVER_KILLED = """
import asyncio, sys, asyncgw
async def main():
    gateway = await asyncgw.makegateway("slurm=-J agw-orphan")
    print(gateway._transport.pid, gateway.remote_pid, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def test_killed_caller_leaves_no_step(cluster: SlurmCluster, tmp_path: Path) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER_KILLED)
    caller = subprocess.Popen(
        [PYTHON, str(driver)], stdout=subprocess.PIPE, text=True, env={**cluster.env, **DRIVER_ENV}
    )
    try:
        assert caller.stdout is not None
        srun, worker = (int(word) for word in caller.stdout.readline().split())
        assert any(
            "agw-orphan" in line for line in cluster.run("squeue", "-h", "-o", "%j").stdout.split()
        )
        caller.send_signal(signal.SIGKILL)
        caller.wait(10)
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
        if caller.stdout:
            caller.stdout.close()
    cluster.wait_empty(timeout=20)
    _wait_until(lambda: not psutil.pid_exists(srun), "srun to exit")
    _wait_until(lambda: not psutil.pid_exists(worker), "the worker to exit")


DRIVER_GROUP = """
import asyncio, json, os, subprocess, sys
import asyncgw
from asyncgw.fleet import Remote

def square(x):
    return x * x

async def main():
    specs = asyncgw.slurm_specs(per_node=None)
    results = {"specs": specs, "job": os.environ["SLURM_JOB_ID"]}
    async with asyncgw.Group(specs) as group:
        channels = [gw.remote_exec(
            "import os; channel.send((os.environ['SLURM_JOB_ID'], os.environ['SLURM_STEP_ID']))"
        ) for gw in group]
        results["steps"] = [await ch.receive() for ch in channels]
        remote = Remote("echo $SLURM_JOB_ID", group)
        await remote.run()
        results["remote"] = [(p.exit_code, p.stdout.strip()) for p in remote.processes]
        async with asyncgw.Pool(group) as pool:
            results["map"] = await pool.map(square, range(100))
        results["queue_inside"] = subprocess.run(
            ["squeue", "-h", "-s", "-j", os.environ["SLURM_JOB_ID"], "-o", "%i"],
            capture_output=True, text=True).stdout.split()
    results["steps_after"] = subprocess.run(
        ["squeue", "-h", "-s", "-j", os.environ["SLURM_JOB_ID"], "-o", "%i"],
        capture_output=True, text=True).stdout.split()
    print(json.dumps(results), flush=True)

asyncio.run(main())
"""


def test_group_over_an_salloc_allocation(cluster: SlurmCluster, tmp_path: Path) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER_GROUP)
    result = cluster.run(
        "salloc", "-N1", "-n2", "-J", "agw-alloc", PYTHON, str(driver), timeout=60, env=DRIVER_ENV
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout.strip().splitlines()[-1])
    job = results["job"]
    assert results["specs"] == [
        f"slurm=--nodelist={cluster.node}//id={cluster.node}.{i}" for i in range(2)
    ]
    # steps of the allocation's own job, one each (--jobid, --overlap)
    assert sorted(results["steps"]) == [[job, "0"], [job, "1"]]
    assert results["remote"] == [[0, job], [0, job]]
    assert results["map"] == [x * x for x in range(100)]
    assert sorted(results["queue_inside"]) == [f"{job}.0", f"{job}.1"]
    assert results["steps_after"] == []
    # salloc has returned; slurmctld lists the job until it has completed it.
    _wait_until(
        lambda: "agw-alloc" not in cluster.run("squeue", "-h", "-o", "%j").stdout,
        "the allocation to end",
    )
