"""asyncgw's fleet layer beside parallel-ssh, fabric and a bare asyncssh floor, in one run.

Usage::

    python benchmarks/bench_fleet.py [--quick] [--repeat N] [--hosts N] [--json out.json]

Needs root, iproute2 and OpenSSH's sshd: it builds a farm of ``--hosts``
(32) hosts on this machine with ``tests/hostfarm.py``, each a network
namespace with its own sshd (default MaxStartups and MaxSessions), and
measures, for every contender:

1. ``hostname``, fresh connections: connect to every host, run
   ``hostname`` on each and collect the outputs (ms);
2. ``hostname`` again on the connections the first row opened (ms);
3. a put of one file of random bytes (50 MB, 10 MB with ``--quick``) to
   each host, connecting included: aggregate MB/s, hosts x size / time
   (1 MB = 10^6 bytes);
4. memory per host: the measuring process's peak RSS while it works minus
   its RSS just before it starts connecting, divided by the number of
   hosts (KiB), for rows 1-2 (one process) and for row 3. The peak is the
   kernel's VmHWM, reset at the start (``ru_maxrss`` would not do: after
   ``exec`` it keeps the peak of the forked driver).

Contenders, each with its library's defaults otherwise:

- ``floor``: asyncssh with ``asyncio.gather`` (``connect`` then ``run``
  per host, the key read once; the put is ``start_sftp_client`` then
  ``sftp.put`` per host);
- ``asyncgw``: ``asyncgw.fleet``: ``Remote("hostname", hosts)`` held open
  in ``async with`` (``run()``, then ``reset()`` and ``run()`` again), and
  ``Put(hosts, [file], remote_location=".../{{{host}}}.bin")``;
- ``parallel-ssh``: the native (ssh2) ``ParallelSSHClient``,
  ``run_command`` then ``join`` and read each output, the second command on
  the same client; the put is ``copy_file`` (SFTP) with per-host
  ``copy_args``. ``num_retries=1``: no contender retries a failed
  connection;
- ``fabric``: ``ThreadingGroup(...).run("hostname", hide=True)``, twice on
  the same group; the put is a thread per host over ``Connection.put``
  (``ThreadingGroup.put`` exists but gives every host the same remote
  path, and the hosts share one filesystem).

Each sshd sets ``SHLVL=1`` for its sessions (``SetEnv``), so that the
remote bash does not source ``~/.bashrc``: the rows measure the clients,
not the remote user's shell start-up (``pyenv init`` in root's
``~/.bashrc`` cost 85 ms per command where this was written, 20 times the
command itself). SFTP is sshd's ``internal-sftp``.

Host keys are not checked by any contender (asyncssh ``known_hosts=None``,
parallel-ssh's default, paramiko's ``AutoAddPolicy`` that fabric sets);
every contender authenticates as root with the same ed25519 key.

Each measurement runs in a fresh interpreter (this script with
``--worker``), timed from after its imports; closing connections is not
timed. A failed host (no connection, non-zero exit, an output that is not
this machine's hostname, since namespaces share it, or a put whose file
is missing, of the wrong size, or whose SHA-256 differs on the first and
last hosts) is counted and reported, never retried; its sample still
counts. The put files go to ``/tmp/bench-fleet-put-<pid>/<address>.bin``
(the namespaces share this machine's filesystem) and are removed after
each measurement.

The contenders take turns, and which goes first rotates each round; the
first round is a discarded warm-up and the median of the next
``--repeat`` (5; 1 with ``--quick``) is reported, ``±`` being half the
min-max range. Ratios are each contender's median over the floor's. The
table is printed; the results go to ``docs/_results/fleet.json``.
A contender whose library cannot be imported is skipped, with a line
saying so.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    Recorder,
    Result,
    Target,
    format_cell,
    format_ratio,
    format_rows,
    reap_children,
    version,
)

REPO = Path(__file__).resolve().parent.parent
CONTENDERS = ("floor", "asyncgw", "parallel-ssh", "fabric")
#: The import each contender needs, checked before the run.
IMPORTS = {
    "floor": "import asyncssh",
    "asyncgw": "from asyncgw.fleet import Host, Put, Remote",
    "parallel-ssh": "import gevent; from pssh.clients import ParallelSSHClient",
    "fabric": "from fabric import ThreadingGroup; from fabric.exceptions import GroupException",
}
#: The distribution whose version the header shows.
DISTRIBUTIONS = {
    "floor": "asyncssh",
    "asyncgw": "asyncgw",
    "parallel-ssh": "parallel-ssh",
    "fabric": "fabric",
}
MB = 1_000_000
#: Seconds one measuring process may take.
WORKER_TIMEOUT = 900.0
RESULT_PREFIX = "BENCH-FLEET-RESULT "
#: bash sources ~/.bashrc for a command sshd runs unless SHLVL says it is
#: not the top-level shell: the rows measure the clients, not the remote
#: user's shell start-up (on the machine this was written on, root's
#: ~/.bashrc runs ``pyenv init``: 85 ms per command instead of 4).
SSHD_OPTIONS = "SetEnv SHLVL=1\n"


# -- the measuring process (--worker)


@dataclass
class Job:
    """What one measuring process does, passed to it as JSON."""

    contender: str
    task: str  # "hostname" or "put"
    hosts: list[str]
    key: str
    expected: str  # hostname's output
    local: str = ""
    remote_dir: str = ""


def _status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise LookupError(field)


class Meter:
    """Time, memory and CPU of the measuring process.

    Memory is the peak RSS during the work minus the RSS just before it:
    :meth:`start` resets the kernel's peak (``5`` to /proc/self/clear_refs)
    and reads VmRSS; :meth:`report` reads the peak, VmHWM. Not
    ``ru_maxrss``: after ``exec`` Linux keeps in it the peak of the image
    the process replaced, a fork of the driver here.
    """

    def __init__(self) -> None:
        self.baseline_kib = 0
        self.cpu = 0.0
        self.times: dict[str, float] = {}
        self._started = 0.0

    def start(self) -> None:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        self.baseline_kib = _status_kib("VmRSS")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu = usage.ru_utime + usage.ru_stime
        self._started = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name] = now - self._started
        self._started = now

    def restart(self) -> None:
        self._started = time.perf_counter()

    def report(self, failed: dict[str, list[str]], errors: list[str]) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "times": self.times,
            "failed": failed,
            "errors": errors[:5],
            "baseline_kib": self.baseline_kib,
            "peak_kib": _status_kib("VmHWM"),
            "cpu": usage.ru_utime + usage.ru_stime - self.cpu,
        }


def _hostname_ok(job: Job, exit_status: int | None, stdout: str) -> bool:
    return exit_status == 0 and stdout.strip() == job.expected


async def floor_hostname(job: Job, meter: Meter) -> dict[str, Any]:
    import asyncssh

    key = asyncssh.read_private_key(job.key)
    failed: dict[str, list[str]] = {"first": [], "second": []}
    errors: list[str] = []
    meter.start()

    async def connect_run(address: str) -> tuple[asyncssh.SSHClientConnection, Any]:
        conn = await asyncssh.connect(address, username="root", client_keys=[key], known_hosts=None)
        try:
            return conn, await conn.run("hostname")
        except BaseException:
            conn.close()
            raise

    outcomes = await asyncio.gather(*map(connect_run, job.hosts), return_exceptions=True)
    meter.lap("first")
    conns = []
    for address, outcome in zip(job.hosts, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            failed["first"].append(address)
            errors.append(f"{address}: {outcome!r}")
            continue
        conns.append((address, outcome[0]))
        if not _hostname_ok(job, outcome[1].exit_status, str(outcome[1].stdout)):
            failed["first"].append(address)
    meter.restart()
    seconds = await asyncio.gather(
        *(conn.run("hostname") for _, conn in conns), return_exceptions=True
    )
    meter.lap("second")
    for (address, _), outcome in zip(conns, seconds, strict=True):
        if isinstance(outcome, BaseException):
            failed["second"].append(address)
            errors.append(f"{address}: {outcome!r}")
        elif not _hostname_ok(job, outcome.exit_status, str(outcome.stdout)):
            failed["second"].append(address)
    result = meter.report(failed, errors)
    for _, conn in conns:
        conn.close()
    await asyncio.gather(*(conn.wait_closed() for _, conn in conns))
    return result


async def floor_put(job: Job, meter: Meter) -> dict[str, Any]:
    import asyncssh

    key = asyncssh.read_private_key(job.key)
    meter.start()
    conns: list[asyncssh.SSHClientConnection] = []

    async def put(address: str) -> None:
        conn = await asyncssh.connect(address, username="root", client_keys=[key], known_hosts=None)
        conns.append(conn)
        async with conn.start_sftp_client() as sftp:
            await sftp.put(job.local, f"{job.remote_dir}/{address}.bin")

    outcomes = await asyncio.gather(*map(put, job.hosts), return_exceptions=True)
    meter.lap("put")
    failed = [a for a, o in zip(job.hosts, outcomes, strict=True) if o is not None]
    errors = [f"{a}: {o!r}" for a, o in zip(job.hosts, outcomes, strict=True) if o is not None]
    result = meter.report({"put": failed}, errors)
    for conn in conns:
        conn.close()
    await asyncio.gather(*(conn.wait_closed() for conn in conns))
    return result


async def asyncgw_hostname(job: Job, meter: Meter) -> dict[str, Any]:
    from asyncgw.fleet import Host, Remote

    hosts = [Host(address, user="root", keyfile=job.key) for address in job.hosts]
    params: dict[str, Any] = {"known_hosts": None}
    failed: dict[str, list[str]] = {}
    errors: list[str] = []

    def check(action: Any, phase: str) -> None:
        failed[phase] = []
        for process in action.processes:
            if not (process.finished_ok and _hostname_ok(job, process.exit_code, process.stdout)):
                failed[phase].append(process.host_name)
                errors.append(f"{process.host_name}: {process.error_reason or process!r}")

    meter.start()
    async with Remote("hostname", hosts, connection_params=params) as action:
        await action.run()
        meter.lap("first")
        check(action, "first")
        meter.restart()
        action.reset()
        await action.run()
        meter.lap("second")
        check(action, "second")
        result = meter.report(failed, errors)
    return result


async def asyncgw_put(job: Job, meter: Meter) -> dict[str, Any]:
    from asyncgw.fleet import Host, Put

    hosts = [Host(address, user="root", keyfile=job.key) for address in job.hosts]
    params: dict[str, Any] = {"known_hosts": None}
    meter.start()
    remote = job.remote_dir + "/{{{host}}}.bin"  # {{{host}}}: each host's address
    async with Put(hosts, [job.local], remote_location=remote, connection_params=params) as put:
        await put.run()
        meter.lap("put")
        failed = [p.host_name for p in put.processes if not p.finished_ok]
        errors = [
            f"{p.host_name}: {p.error_reason or p!r}" for p in put.processes if not p.finished_ok
        ]
        result = meter.report({"put": failed}, errors)
    return result


def pssh_client(job: Job) -> Any:
    from pssh.clients import ParallelSSHClient

    return ParallelSSHClient(
        job.hosts,
        user="root",
        pkey=job.key,
        num_retries=1,
        allow_agent=False,
        identity_auth=False,
    )


def pssh_hostname(job: Job, meter: Meter) -> dict[str, Any]:
    failed: dict[str, list[str]] = {}
    errors: list[str] = []
    meter.start()
    client = pssh_client(job)

    def run(phase: str) -> None:
        output = client.run_command("hostname", stop_on_errors=False)
        client.join(output)
        failed[phase] = []
        for host_out in output:
            if host_out.exception is not None:
                failed[phase].append(host_out.host)
                errors.append(f"{host_out.host}: {host_out.exception!r}")
                continue
            stdout = "\n".join(host_out.stdout)
            if not _hostname_ok(job, host_out.exit_code, stdout):
                failed[phase].append(host_out.host)

    run("first")
    meter.lap("first")
    run("second")
    meter.lap("second")
    return meter.report(failed, errors)


def pssh_put(job: Job, meter: Meter) -> dict[str, Any]:
    import gevent

    meter.start()
    client = pssh_client(job)
    greenlets = client.copy_file(
        job.local,
        f"{job.remote_dir}/%(host)s.bin",
        copy_args=[{"host": address} for address in job.hosts],
    )
    gevent.joinall(greenlets)
    meter.lap("put")
    failed = [a for a, g in zip(job.hosts, greenlets, strict=True) if g.exception is not None]
    errors = [
        f"{a}: {g.exception!r}"
        for a, g in zip(job.hosts, greenlets, strict=True)
        if g.exception is not None
    ]
    return meter.report({"put": failed}, errors)


def fabric_group(job: Job) -> Any:
    from fabric import ThreadingGroup

    return ThreadingGroup(
        *job.hosts,
        user="root",
        connect_kwargs={"key_filename": job.key, "look_for_keys": False, "allow_agent": False},
    )


def fabric_hostname(job: Job, meter: Meter) -> dict[str, Any]:
    from fabric.exceptions import GroupException

    failed: dict[str, list[str]] = {}
    errors: list[str] = []
    meter.start()
    group = fabric_group(job)

    def run(phase: str) -> None:
        try:
            results = group.run("hostname", hide=True, warn=True)
        except GroupException as failure:
            results = failure.result
        failed[phase] = []
        for connection, outcome in results.items():
            if isinstance(outcome, BaseException):
                failed[phase].append(connection.host)
                errors.append(f"{connection.host}: {outcome!r}")
            elif not _hostname_ok(job, outcome.exited, outcome.stdout):
                failed[phase].append(connection.host)
        failed[phase] += [c.host for c in group if c not in results]

    run("first")
    meter.lap("first")
    run("second")
    meter.lap("second")
    result = meter.report(failed, errors)
    group.close()
    return result


def fabric_put(job: Job, meter: Meter) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    meter.start()
    group = fabric_group(job)
    with ThreadPoolExecutor(max_workers=len(group)) as pool:
        futures = [
            pool.submit(c.put, job.local, remote=f"{job.remote_dir}/{c.host}.bin") for c in group
        ]
        outcomes = [future.exception() for future in futures]
    meter.lap("put")
    failed = [c.host for c, o in zip(group, outcomes, strict=True) if o is not None]
    errors = [f"{c.host}: {o!r}" for c, o in zip(group, outcomes, strict=True) if o is not None]
    result = meter.report({"put": failed}, errors)
    group.close()
    return result


WORKERS: dict[tuple[str, str], Callable[[Job, Meter], Any]] = {
    ("floor", "hostname"): floor_hostname,
    ("floor", "put"): floor_put,
    ("asyncgw", "hostname"): asyncgw_hostname,
    ("asyncgw", "put"): asyncgw_put,
    ("parallel-ssh", "hostname"): pssh_hostname,
    ("parallel-ssh", "put"): pssh_put,
    ("fabric", "hostname"): fabric_hostname,
    ("fabric", "put"): fabric_put,
}


def worker(document: str) -> int:
    """Measure one job and print its result as one JSON line."""
    job = Job(**json.loads(document))
    exec(IMPORTS[job.contender], {})  # before the memory baseline
    function = WORKERS[job.contender, job.task]
    outcome = function(job, Meter())
    if asyncio.iscoroutine(outcome):
        outcome = asyncio.run(outcome)
    print(RESULT_PREFIX + json.dumps(outcome), flush=True)
    return 0


# -- the driver


@dataclass
class Failure:
    """Hosts that failed in one measurement."""

    contender: str
    what: str
    hosts: int
    round_: int
    errors: list[str]


@dataclass
class Run:
    """Everything one benchmark run measured."""

    contenders: list[str]
    rows: dict[str, Result]
    cpu: dict[str, Result]
    failures: list[Failure] = field(default_factory=list)


def render_table(results: Sequence[Result], contenders: Sequence[str]) -> str:
    others = [name for name in contenders if name != "floor"]
    header = ["", "unit", "better", *contenders, *(f"{name}/floor" for name in others)]
    rows = [
        [
            result.workload,
            result.unit,
            "higher" if result.higher_is_better else "lower",
            *(format_cell(result, name) for name in contenders),
            *(format_ratio(result.ratio("floor", mine_name=name)) for name in others),
        ]
        for result in results
    ]
    return format_rows(header, rows)


def run_worker(job: Job) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its result, or
    ``{"crashed": text}``."""
    try:
        completed = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job.__dict__)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired:
        return {"crashed": f"no result in {WORKER_TIMEOUT:.0f}s"}
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-15:])
    return {"crashed": f"exit status {completed.returncode}:\n{tail}"}


def verify_put(hosts: Sequence[str], remote_dir: Path, size: int, digest: str) -> list[str]:
    """The hosts whose copy is missing, of the wrong size, or (first and
    last host) of the wrong SHA-256."""
    bad = []
    for index, address in enumerate(hosts):
        path = remote_dir / f"{address}.bin"
        if not path.is_file() or path.stat().st_size != size:
            bad.append(address)
        elif index in (0, len(hosts) - 1):
            with path.open("rb") as copy:
                if hashlib.file_digest(copy, "sha256").hexdigest() != digest:
                    bad.append(address)
    return bad


def measure(
    contenders: list[str],
    hosts: list[str],
    key: Path,
    local: Path,
    put_mb: int,
    repeat: int,
    progress: Callable[[str], None],
) -> Run:
    n = len(hosts)
    rows = {
        "first": Result("hostname, fresh connections", "ms", higher_is_better=False),
        "second": Result("hostname again, same connections", "ms", higher_is_better=False),
        "put": Result(f"put {put_mb} MB to each", "MB/s", higher_is_better=True),
        "memory hostname": Result("memory per host, hostname", "KiB", higher_is_better=False),
        "memory put": Result("memory per host, put", "KiB", higher_is_better=False),
    }
    cpu = {
        "hostname": Result("cpu: rows 1-2 (connect, 2 commands)", "cpu s", higher_is_better=False),
        "put": Result("cpu: put", "cpu s", higher_is_better=False),
    }
    for result in (*rows.values(), *cpu.values()):
        result.samples = {name: [] for name in contenders}
    run = Run(contenders, rows, cpu)
    size = local.stat().st_size
    with local.open("rb") as source:
        digest = hashlib.file_digest(source, "sha256").hexdigest()
    remote_dir = Path(f"/tmp/bench-fleet-put-{os.getpid()}")
    expected = socket.gethostname()
    warmup = 1
    for round_ in range(warmup + repeat):
        shift = round_ % len(contenders)
        order = contenders[shift:] + contenders[:shift]
        what = "warm-up" if round_ < warmup else f"round {round_ - warmup + 1}/{repeat}"
        started = time.perf_counter()
        for task in ("hostname", "put"):
            for name in order:
                if task == "put":
                    shutil.rmtree(remote_dir, ignore_errors=True)
                    remote_dir.mkdir(mode=0o755)
                job = Job(name, task, hosts, str(key), expected, str(local), str(remote_dir))
                outcome = run_worker(job)
                phases = ["first", "second"] if task == "hostname" else ["put"]
                if "crashed" in outcome:
                    run.failures.append(Failure(name, task, n, round_, [outcome["crashed"]]))
                    progress(f"  {name} {task} failed: {outcome['crashed']}")
                    continue
                if task == "put":
                    bad = verify_put(hosts, remote_dir, size, digest)
                    outcome["failed"]["put"] = sorted(set(outcome["failed"]["put"]) | set(bad))
                    shutil.rmtree(remote_dir, ignore_errors=True)
                for phase in phases:
                    failed = outcome["failed"].get(phase, hosts)
                    if failed:
                        label = rows[phase].workload
                        run.failures.append(
                            Failure(name, label, len(failed), round_, outcome["errors"])
                        )
                        progress(f"  {name}: {len(failed)} of {n} hosts failed in '{label}'")
                if round_ < warmup:
                    continue
                for phase in phases:
                    seconds = outcome["times"][phase]
                    value = n * size / MB / seconds if phase == "put" else seconds * 1000
                    rows[phase].samples[name].append(value)
                growth = (outcome["peak_kib"] - outcome["baseline_kib"]) / n
                rows[f"memory {task}"].samples[name].append(growth)
                cpu[task].samples[name].append(outcome["cpu"])
        progress(f"  {what}: {time.perf_counter() - started:.1f}s")
    return run


def importable(contenders: Sequence[str], progress: Callable[[str], None]) -> list[str]:
    """The contenders whose library imports (checked in a fresh interpreter)."""
    kept = []
    for name in contenders:
        check = subprocess.run(
            [sys.executable, "-c", IMPORTS[name]],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        if check.returncode == 0:
            kept.append(name)
        else:
            error = (check.stderr.strip().splitlines() or ["?"])[-1]
            progress(f"SKIPPED {name}: '{IMPORTS[name]}' fails: {error}")
    return kept


def report(args: argparse.Namespace, run: Run, env: dict[str, Any], skipped: Sequence[str]) -> str:
    names = ", ".join(f"{name} {env['versions'][name]}" for name in run.contenders)
    lines = [
        f"fleet: {names}; {env['date']}",
        f"Python {env['python']}, {env['platform']}, {env['cpus']} cpus",
        f"{args.hosts} hosts: network namespaces of this machine, an OpenSSH sshd each "
        f"(default MaxStartups); every measurement in a fresh interpreter; median of "
        f"{args.repeat} after 1 warm-up, taking turns; ±: half the min-max range",
        "",
        render_table(list(run.rows.values()), run.contenders),
        "",
        "floor: asyncssh + asyncio.gather. Times include connecting where the row says so "
        "(the put always), not closing.",
        "memory: peak RSS of the measuring interpreter while it works (VmHWM, reset at the "
        "start) minus its RSS before connecting, per host.",
    ]
    if skipped:
        lines.append(f"skipped (library not importable): {', '.join(skipped)}")
    lines += ["", "CPU seconds (user+sys) of the measuring interpreter, medians:"]
    lines.append(render_table(list(run.cpu.values()), run.contenders))
    lines += ["", *targets(run)]
    if run.failures:
        lines += ["", "failures (the samples still count):"]
        for failure in run.failures:
            round_ = "warm-up" if failure.round_ == 0 else f"round {failure.round_}"
            lines.append(
                f"  {failure.contender}, {failure.what}, {round_}: {failure.hosts} of "
                f"{args.hosts} hosts failed"
            )
            lines += [f"    {error}" for error in failure.errors[:3]]
    else:
        lines += ["", "failures: none (every host of every measurement checked)"]
    return "\n".join(lines)


def target_list(run: Run) -> list[Target]:
    """The issue's targets as results-file entries (the same rule as :func:`targets`)."""
    found = []
    for result in run.rows.values():
        for other in run.contenders:
            if other == "asyncgw" or result.ratio(other, mine_name="asyncgw") is None:
                continue
            if other == "floor":
                limit, at_most = (1 / 1.1, False) if result.higher_is_better else (1.1, True)
            elif other == "parallel-ssh" and result.unit == "MB/s":
                limit, at_most = 1.0, False
            else:
                # "ahead": strictly better; a tie at 1.00 prints as met (rounding).
                limit, at_most = 1.0, not result.higher_is_better
            found.append(Target(f"{result.workload}, {other}", result.workload, "asyncgw",
                                other, limit, at_most))  # fmt: skip
    return found


def targets(run: Run) -> list[str]:
    """asyncgw against the issue's targets: within 1.1x of the floor and
    ahead of parallel-ssh and fabric on every row (the put at least level
    with parallel-ssh). Ratios are asyncgw's median over the other's, as
    in the table."""
    if "asyncgw" not in run.contenders:
        return ["targets: not checked (asyncgw was not run)"]
    lines = ["targets: asyncgw/other, the floor within 1.1x, the others beaten:"]
    for result in run.rows.values():
        checks = []
        for other in run.contenders:
            ratio = result.ratio(other, mine_name="asyncgw")
            if other == "asyncgw" or ratio is None:
                continue
            if other == "floor":
                met = ratio >= 1 / 1.1 if result.higher_is_better else ratio <= 1.1
            elif other == "parallel-ssh" and result.unit == "MB/s":
                met = ratio >= 1.0
            else:
                met = ratio > 1.0 if result.higher_is_better else ratio < 1.0
            checks.append(f"{other} {ratio:.2f} {'met' if met else 'MISSED'}")
        lines.append(f"  {result.workload} ({result.unit}): {'; '.join(checks)}")
    if any(failure.contender == "asyncgw" for failure in run.failures):
        lines.append("  asyncgw had failed hosts: see the failures")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=32, help="hosts in the farm (default 32)")
    parser.add_argument("--repeat", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="1 round, a 10 MB put")
    parser.add_argument("--put-mb", type=int, default=None, help="put size in MB (default 50)")
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated subset of {','.join(CONTENDERS)}",
    )
    parser.add_argument(
        "--json", metavar="PATH", help="results file (default: docs/_results/fleet.json)"
    )
    parser.add_argument(
        "--output-mb",
        type=int,
        default=None,
        help="output-throughput row: MB read back (default 1000, 200 with --quick; 0: skip)",
    )
    parser.add_argument("--only-output", action="store_true", help="only the output-throughput row")
    parser.add_argument("--worker", metavar="JOB", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = 1
    if args.put_mb is None:
        args.put_mb = 10 if args.quick else 50
    if args.output_mb is None:
        args.output_mb = 200 if args.quick else 1000
    args.contenders = [name for name in args.contenders.split(",") if name]
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return worker(args.worker)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    sys.path.insert(0, str(REPO))
    from tests.hostfarm import host_farm
    from tests.sshserver import Keys

    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("sshd") is None:
        progress("bench_fleet needs root, iproute2 and OpenSSH's sshd")
        return 2
    contenders = importable(args.contenders, progress)
    skipped = [name for name in args.contenders if name not in contenders]
    recorder = Recorder(
        "fleet", peers=[DISTRIBUTIONS[n] for n in contenders if n != "asyncgw"], quick=args.quick
    )
    recorder.notes += [
        "The 32 hosts are network namespaces of this 2-core machine: the sshds' work competes "
        "with the client's.",
        "floor: asyncssh + asyncio.gather. fabric's put is a thread per host over Connection.put.",
    ]
    if skipped:
        recorder.notes.append(f"skipped (library not importable): {', '.join(skipped)}")
    env = {
        "date": recorder.started.date().isoformat(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": {n: version(DISTRIBUTIONS[n]) or "?" for n in contenders},
    }
    config = {"hosts": args.hosts, "repeat": args.repeat, "put_mb": args.put_mb,
              "output_mb": args.output_mb, "contenders": contenders}  # fmt: skip
    started = time.perf_counter()
    progress(f"benchmarking a fleet of {args.hosts} hosts: {', '.join(contenders)}...")
    leftovers: list[str] = []
    output_table = ""
    output_rows: list[Result] = []
    if args.only_output:
        args.contenders, contenders = [], []
        args.hosts = 1
    try:
        with tempfile.TemporaryDirectory(prefix="bench_fleet_") as name:
            directory = Path(name)
            (directory / "keys").mkdir()
            keys = Keys.generate(directory / "keys")
            local = directory / "put.bin"
            with local.open("wb") as out:
                for _ in range(args.put_mb):
                    out.write(os.urandom(MB))
            farm = host_farm(keys, args.hosts, directory / "farm", sshd_options=SSHD_OPTIONS)
            with farm as hosts:
                progress(f"  farm up in {time.perf_counter() - started:.1f}s: {hosts[0]}..")
                run = (
                    None
                    if args.only_output
                    else measure(
                        contenders,
                        list(hosts),
                        keys.user_key_path,
                        local,
                        args.put_mb,
                        args.repeat,
                        progress,
                    )
                )
                if args.output_mb:
                    from bench_fleet_output import measure_output

                    output_table, output_rows = measure_output(
                        directory,
                        hosts[0],
                        keys.user_key_path,
                        args.output_mb,
                        args.repeat,
                        progress,
                    )
    finally:
        shutil.rmtree(f"/tmp/bench-fleet-put-{os.getpid()}", ignore_errors=True)
        leftovers = reap_children()
        if leftovers:
            progress(f"WARNING: killed leftover child processes: {', '.join(leftovers)}")
    if run is None:  # --only-output
        print(output_table)
        recorder.name = "fleet_output"
        recorder.write(output_rows, config=config, path=args.json)
        return 1 if leftovers else 0
    text = report(args, run, env, skipped)
    if output_table:
        text += "\n\n" + output_table
    print(text)
    print(f"total {time.perf_counter() - started:.0f}s")
    recorder.write(
        [*run.rows.values(), *output_rows, *run.cpu.values()],
        target_list(run),
        config=config,
        path=args.json,
        extra={"failures": [failure.__dict__ for failure in run.failures],
               "cpu_rows": [r.workload for r in run.cpu.values()]},
    )  # fmt: skip
    return 1 if leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
