"""A throw-away single-node Slurm cluster for end-to-end tests.

:func:`slurm_cluster` starts munged, slurmctld and slurmd from Debian's
``slurm-wlm`` and ``munge`` packages with a config of its own in a temporary
directory: one node (this machine, reached at 127.0.0.1), ports picked free
on loopback, state, spool, logs and a munge key made for the test, all in
that directory. It waits until ``sinfo`` shows the node idle, and at the end
cancels what is left in the queue, stops the daemons by the pids it started
(never by name) and removes the directory.

Clients find the cluster through ``SLURM_CONF`` (:attr:`SlurmCluster.env`);
nothing under /etc is read or written. Without Slurm installed the tests
skip, except where ``ASYNCGW_REQUIRE_SLURM`` is set (CI): there they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

SBIN = ("/usr/sbin", "/usr/bin")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("srun", "salloc", "sinfo", "squeue", "scancel")
#: Seconds to wait for the node to come up idle, and for the queue to empty.
START_TIMEOUT = 60.0
#: CPUs the node declares (more than this machine may have: the config
#: overrides what slurmd detects), so that tests can ask for several tasks.
NODE_CPUS = 8


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in SBIN:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return None


def require_slurm() -> dict[str, str]:
    """The paths of the Slurm and munge programs; skip without them, except
    where ASYNCGW_REQUIRE_SLURM is set (CI): fail there."""
    paths = {name: _which(name) for name in (*DAEMONS, *CLIENTS)}
    missing = sorted(name for name, path in paths.items() if path is None)
    if missing:
        reason = f"Slurm is not installed here (missing: {', '.join(missing)})"
        if os.environ.get("ASYNCGW_REQUIRE_SLURM"):
            pytest.fail(f"{reason}, and ASYNCGW_REQUIRE_SLURM is set")
        pytest.skip(f"{reason}; apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        reason = "a test Slurm cluster needs root (slurmd launches steps as their user)"
        if os.environ.get("ASYNCGW_REQUIRE_SLURM"):
            pytest.fail(reason)
        pytest.skip(reason)
    return {name: str(path) for name, path in paths.items()}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class SlurmCluster:
    """A running test cluster: its directory, node name, and the environment
    its clients need (``SLURM_CONF``; no ``SLURM_JOB_ID`` from outside)."""

    directory: Path
    node: str
    env: dict[str, str]
    daemons: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def run(
        self, *argv: str, timeout: float = 30.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client with the cluster's environment (and ``env``)."""
        return subprocess.run(
            argv,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def queue(self) -> list[str]:
        """``squeue``'s lines: job id, state, reason, steps excluded."""
        result = self.run("squeue", "-h", "-o", "%i %T %r")
        return result.stdout.split("\n") if result.stdout.strip() else []

    def steps(self) -> list[str]:
        """``squeue -s``'s lines: the job steps running."""
        result = self.run("squeue", "-h", "-s", "-o", "%i %j")
        return [line for line in result.stdout.splitlines() if line.strip()]

    def wait_empty(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until no job or step is in the queue."""
        deadline = time.monotonic() + timeout
        while self.queue() or self.steps():
            if time.monotonic() > deadline:
                raise AssertionError(f"queue not empty: {self.queue()} {self.steps()}")
            time.sleep(0.1)

    def stepds(self) -> list[psutil.Process]:
        """The slurmstepd processes of this cluster's slurmd (daemonized:
        they are not its children but inherit its SLURM_CONF)."""
        found = []
        conf = str(self.directory / "slurm.conf")
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] != "slurmstepd":
                continue
            with contextlib.suppress(psutil.Error):
                if proc.environ().get("SLURM_CONF") == conf:
                    found.append(proc)
        return found


def write_config(directory: Path, node: str, cpus: int = NODE_CPUS) -> Path:
    """slurm.conf for a one-node cluster in ``directory`` (see the module)."""
    for sub in ("state", "spool", "log"):
        (directory / sub).mkdir(exist_ok=True)
    config = directory / "slurm.conf"
    config.write_text(
        f"""ClusterName=asyncgwtest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={directory / "munge.socket"}
StateSaveLocation={directory / "state"}
SlurmdSpoolDir={directory / "spool"}
SlurmctldPidFile={directory / "slurmctld.pid"}
SlurmdPidFile={directory / "slurmd.pid"}
SlurmctldLogFile={directory / "log" / "slurmctld.log"}
SlurmdLogFile={directory / "log" / "slurmd.log"}
PlugStackConfig={directory / "plugstack.conf"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
KillWait=2
MinJobAge=2
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={node} NodeAddr=127.0.0.1 NodeHostname={node} CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""
    )
    (directory / "plugstack.conf").write_text("")
    return config


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("w") as log_file:
        return subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a daemon we started (by its pid), kill it after 10 s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_for(condition: object, what: str, logs: Path, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            tails = [
                f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-15:])
                for log in sorted(logs.glob("*.log"))
            ]
            raise AssertionError(f"test Slurm cluster: {what} timed out\n" + "\n".join(tails))
        time.sleep(0.1)


@contextlib.contextmanager
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Start a throw-away single-node cluster; stop and remove it at the end."""
    paths = require_slurm()
    directory = Path(tempfile.mkdtemp(prefix="asyncgw-slurm-"))
    os.chmod(directory, 0o755)  # munged and slurmd check their directories
    node = socket.gethostname().split(".")[0]
    config = write_config(directory, node)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SALLOC_", "SRUN_"))}
    env["SLURM_CONF"] = str(config)
    cluster = SlurmCluster(directory, node, env)
    logs = directory / "log"
    try:
        key = directory / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        cluster.daemons["munged"] = _start(
            [
                paths["munged"],
                "--foreground",
                "--force",
                f"--key-file={key}",
                f"--socket={directory / 'munge.socket'}",
                f"--pid-file={directory / 'munged.pid'}",
                f"--log-file={logs / 'munged-file.log'}",
                f"--seed-file={directory / 'munge.seed'}",
            ],
            logs / "munged.log",
            env,
        )
        _wait_for((directory / "munge.socket").exists, "munged's socket", logs)
        cluster.daemons["slurmctld"] = _start(
            [paths["slurmctld"], "-D", "-i", "-f", str(config)], logs / "slurmctld.out.log", env
        )
        _wait_for(lambda: cluster.run("sinfo", "-h").returncode == 0, "slurmctld", logs)
        cluster.daemons["slurmd"] = _start(
            [paths["slurmd"], "-D", "-N", node, "-f", str(config)], logs / "slurmd.out.log", env
        )

        def idle() -> bool:
            for name, proc in cluster.daemons.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited with {proc.returncode}")
            states = cluster.run("sinfo", "-h", "-N", "-o", "%t").stdout.split()
            return states == ["idle"]

        _wait_for(idle, "the node coming up idle", logs)
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            if "slurmctld" in cluster.daemons and cluster.daemons["slurmctld"].poll() is None:
                cluster.run("scancel", "--full", "--quiet", "-u", "root", timeout=10)
                cluster.wait_empty(timeout=15)
        for name in reversed(list(cluster.daemons)):
            _stop(cluster.daemons[name])
        for stepd in cluster.stepds():  # orphaned by a test gone wrong: ours by SLURM_CONF
            with contextlib.suppress(psutil.Error):
                stepd.kill()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    """A test Slurm cluster for the module's tests."""
    with slurm_cluster() as cluster:
        yield cluster
