"""pytest-xdist on asyncgw gateways beside pytest-xdist on execnet, in one run.

Usage::

    python benchmarks/bench_xdist.py [--quick] [--repeat N] [--profile] [--json out.json]

Generates, in a temporary directory, a project of 2000 trivial tests (40
files of 50 plain ``def test_N(): pass`` functions, so that collection does
real work) and times whole ``python -m pytest -q -p no:cacheprovider`` runs
in it, from the start of the process to its exit:

- ``-n 0``: no workers. execnet: plain pytest (xdist loaded, and execnet
  with it); asyncgw: with ``-p asyncgw.xdist`` too, so that ``import
  execnet`` gives asyncgw's facade. What the plugin costs where it does
  nothing.
- ``-n 2`` and ``-n 8``: ``-n N`` (xdist on execnet) and ``-p asyncgw.xdist
  -n N`` (xdist, unmodified, on asyncgw gateways).

The two take turns, run by run, and which goes first alternates each round,
so that drift on the machine hits both alike; the first round is a
discarded warm-up (it also writes the test files' bytecode) and the median
of the next ``--repeat`` (3) is reported. Every run must exit 0 and report
``2000 passed``; one that does not stops the benchmark with its command and
output: a failed run is an error, not a figure.

The last row is the blocking facade's channel round trip (``send(i)`` then
``receive()`` against a remote echo loop on a popen gateway), asyncgw.sync
beside execnet: ``bench_core.bench_roundtrip``, reused as it is.

The table is printed and the results, every sample included, written to
``docs/_results/xdist.json``. ``--profile`` then looks, once, at where the
time of ``-p asyncgw.xdist -n 8`` goes: cProfile of the controller's main
thread (top 25 by cumulative and by own time), and a timeline of every
process (start, ready, collection, last report, end; CPU, per thread in
the controller) from a ``conftest.py`` added for that part only, beside
execnet's ``-n 8``, ``-n 0`` and ``-n 0 --collect-only``. That part is
printed only, not written to the results file.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.metadata
import json
import os
import platform
import pstats
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import execnet
import pytest
from bench_core import Config, bench_roundtrip
from harness import (
    Recorder,
    Result,
    Target,
    format_cell,
    format_ratio,
    format_rows,
    format_value,
    reap_children,
)

import asyncgw

FILES = 40
TESTS_PER_FILE = 50
TESTS = FILES * TESTS_PER_FILE
PASSED = re.compile(rf"\b{TESTS} passed\b")
COLLECTED = re.compile(rf"\b{TESTS} tests? collected\b")
#: Seconds one pytest run may take before it counts as hung.
RUN_TIMEOUT = 600.0
IMPLEMENTATIONS = ("execnet", "asyncgw")
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
#: Environment variable naming the file the profiling conftest appends to.
TIMELINE_VARIABLE = "BENCH_XDIST_TIMELINE"


class RunFailed(Exception):
    """Raised when a measured pytest run exits non-zero or does not report
    every test passed; carries the command, the exit status and the output."""

    def __init__(self, argv: Sequence[str], status: int, output: str) -> None:
        self.argv = list(argv)
        self.status = status
        self.output = output
        tail = "\n".join(output.splitlines()[-30:])
        super().__init__(f"{' '.join(argv)}\nexit status {status}; output ends:\n{tail}")


@dataclass(frozen=True)
class Run:
    """One finished pytest run."""

    wall: float
    #: user+sys CPU seconds of every process of the run (all reaped descendants).
    cpu: float


#: Issue 21's targets: asyncgw's wall time over execnet's, per -n.
XDIST_TARGETS = {2: 0.85, 8: 0.6}


# -- the project


def make_project(directory: Path) -> None:
    """40 files of 50 trivial tests, and an empty ``pytest.ini`` so that no
    configuration from outside the directory applies."""
    (directory / "pytest.ini").write_text("[pytest]\n")
    for number in range(FILES):
        body = "".join(f"def test_{i}():\n    pass\n\n\n" for i in range(TESTS_PER_FILE))
        (directory / f"test_m{number:02d}.py").write_text(body)


def pytest_argv(implementation: str, workers: int) -> list[str]:
    plugin = ["-p", "asyncgw.xdist"] if implementation == "asyncgw" else []
    return [*PYTEST, *plugin, "-n", str(workers)]


def clean_environment(**extra: str) -> dict[str, str]:
    """Ours, without what would add options or plugins to the runs."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS") and not name.startswith("PYTEST_XDIST")
    }
    environment.update(extra)
    return environment


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_pytest(
    project: Path,
    argv: Sequence[str],
    expect: re.Pattern[str] = PASSED,
    environment: dict[str, str] | None = None,
) -> Run:
    """Run ``argv`` in ``project`` and time it, start to exit.

    :raises RunFailed: if it exits non-zero or its output lacks ``expect``.
    """
    cpu_before = children_cpu()
    started = time.perf_counter()
    completed = subprocess.run(
        argv,
        cwd=project,
        env=environment or clean_environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    wall = time.perf_counter() - started
    output = completed.stdout + completed.stderr
    if completed.returncode != 0 or not expect.search(completed.stdout):
        raise RunFailed(argv, completed.returncode, output)
    return Run(wall, children_cpu() - cpu_before)


# -- measuring


def measure_xdist(
    project: Path,
    worker_counts: Sequence[int],
    repeat: int,
    warmup: int,
    progress: Callable[[str], None],
) -> tuple[list[Result], list[Result]]:
    """Wall time and CPU time (seconds) per worker count, one ``Result``
    each; execnet and asyncgw take turns, rotating who goes first."""
    walls = {n: Result(f"-n {n}", "s", higher_is_better=False) for n in worker_counts}
    cpus = {n: Result(f"-n {n} (cpu)", "cpu s", higher_is_better=False) for n in worker_counts}
    for result in (*walls.values(), *cpus.values()):
        result.samples = {name: [] for name in IMPLEMENTATIONS}
    for round_ in range(warmup + repeat):
        shift = round_ % len(IMPLEMENTATIONS)
        order = IMPLEMENTATIONS[shift:] + IMPLEMENTATIONS[:shift]
        started = time.perf_counter()
        for n in worker_counts:
            for name in order:
                run = run_pytest(project, pytest_argv(name, n))
                if round_ >= warmup:
                    walls[n].samples[name].append(run.wall)
                    cpus[n].samples[name].append(run.cpu)
        what = "warm-up" if round_ < warmup else f"round {round_ - warmup + 1}/{repeat}"
        progress(f"  xdist {what}: {time.perf_counter() - started:.1f}s")
    return list(walls.values()), list(cpus.values())


def measure_roundtrip(repeat: int, iterations: int) -> Result:
    """bench_core's round trip, reused as it is (µs per round trip; it also
    measures asyncgw's async API and the raw pipe bound)."""
    config = Config(
        start_reps=repeat,
        steady_reps=repeat,
        warmup=1,
        group_sizes=(),
        roundtrips=iterations,
        ints=0,
        mebibytes=0,
    )
    return asyncio.run(bench_roundtrip(config))


def roundtrip_row(full: Result) -> Result:
    """The table's row: the blocking facade, asyncgw.sync, as "asyncgw"."""
    return Result(
        "round trip",
        "us",
        higher_is_better=False,
        samples={"execnet": full.samples["execnet"], "asyncgw": full.samples["sync"]},
    )


# -- reporting


def render_table(results: Sequence[Result]) -> str:
    header = ["", "unit", *IMPLEMENTATIONS, "asyncgw/execnet"]
    rows = [
        [
            result.workload,
            result.unit,
            *(format_cell(result, name) for name in IMPLEMENTATIONS),
            format_ratio(result.ratio("execnet")),
        ]
        for result in results
    ]
    return format_rows(header, rows)


def environment_info() -> dict[str, Any]:
    return {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "asyncgw": asyncgw.__version__,
        "execnet": execnet.__version__,
        "pytest": pytest.__version__,
        "pytest-xdist": importlib.metadata.version("pytest-xdist"),
    }


def report(
    env: dict[str, Any],
    args: argparse.Namespace,
    rows: Sequence[Result],
    cpu: Sequence[Result],
    roundtrip: Result,
) -> str:
    async_rt, bound_rt = roundtrip.median("asyncgw"), roundtrip.median("bound")
    lines = [
        f"asyncgw {env['asyncgw']} vs execnet {env['execnet']} under pytest {env['pytest']}, "
        f"pytest-xdist {env['pytest-xdist']}; {env['date']}",
        f"Python {env['python']}, {env['platform']}, {env['cpus']} cpus",
        f"{TESTS} trivial tests in {FILES} files; whole 'python -m pytest -q -p no:cacheprovider' "
        f"runs, median of {args.repeat} after 1 warm-up, taking turns",
        f"round trip: bench_core's, {args.roundtrips:,} per sample, median of "
        f"{args.roundtrip_repeat} after 1 warm-up; ±: half the min-max range",
        "",
        render_table([*rows, roundtrip_row(roundtrip)]),
        "",
        "-n 0: execnet is plain pytest (xdist loaded, execnet imported); asyncgw adds "
        "-p asyncgw.xdist.",
        "-n N: execnet is 'pytest -n N'; asyncgw is 'pytest -p asyncgw.xdist -n N'.",
        "round trip: asyncgw is asyncgw.sync, the facade xdist runs on; same run, asyncgw's "
        f"async API {format_value(async_rt)} us, raw pipe bound {format_value(bound_rt)} us.",
        "",
        "CPU seconds (user+sys) of all the run's processes, medians:",
        render_table(cpu),
    ]
    return "\n".join(lines)


# -- profiling (--profile)

#: Written into the project for the profiling runs only: every process (the
#: controller and each worker) appends one JSON line of wall-clock marks.
TIMELINE_CONFTEST = f"""\
import json
import os
import threading
import time

import pytest


def started(pid="self"):
    # /proc/PID/stat's starttime (clock ticks since boot), as wall-clock time:
    # consistent between processes to a tick (psutil's create_time rounds the
    # boot time to whole seconds).
    with open(f"/proc/{{pid}}/stat") as stat:
        ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - age


MARKS = {{"conftest": time.time()}}
WHO = os.environ.get("PYTEST_XDIST_WORKER", "controller")


def mark(name):
    MARKS.setdefault(name, time.time())


def pytest_sessionstart(session):
    mark("ready")


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session):
    mark("collect_start")


def pytest_collection_finish(session):
    mark("collect_end")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config, specs):
    mark("setupnodes")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodeready(node):
    MARKS.setdefault("workers_ready", []).append(time.time())


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    MARKS.setdefault("workers_collected", []).append(time.time())


def pytest_runtest_logreport(report):
    mark("first_report")
    MARKS["last_report"] = time.time()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    MARKS.setdefault("workers_down", []).append(time.time())


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    mark("finish")  # before xdist's (the controller's ends its workers)


def thread_cpu():
    # CPU seconds per thread of this process, by thread name.
    names = {{thread.native_id: thread.name for thread in threading.enumerate()}}
    cpu = {{}}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{{tid}}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        name = names.get(int(tid), f"tid {{tid}}")
        cpu[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    mark("unconfigure")
    path = os.environ.get("{TIMELINE_VARIABLE}")
    if path is None:
        return
    record = {{
        "who": WHO,
        "pid": os.getpid(),
        "created": started(),
        "parent": os.getppid(),
        "parent_created": started(os.getppid()),
        "cpu": time.process_time(),  # this process's, up to here (not its exit)
        "threads": thread_cpu(),
        "marks": MARKS,
    }}
    with open(path, "a") as out:
        out.write(json.dumps(record) + "\\n")
"""


@dataclass(frozen=True)
class Timeline:
    """The marks of one run's processes, in seconds since the controller
    process was created."""

    run: Run
    controller: dict[str, Any]
    workers: list[dict[str, Any]]

    @classmethod
    def load(cls, path: Path, run: Run) -> Timeline:
        records = [json.loads(line) for line in path.read_text().splitlines()]
        controller = next(r for r in records if r["who"] == "controller")
        workers = sorted((r for r in records if r["who"] != "controller"), key=lambda r: r["who"])
        return cls(run, controller, workers)

    def at(self, record: dict[str, Any], mark: str) -> float:
        zero: float = self.controller["created"]
        value: float = record["created"] if mark == "created" else record["marks"][mark]
        return value - zero


def run_timeline(project: Path, argv: Sequence[str], expect: re.Pattern[str]) -> Timeline:
    path = project / "timeline.jsonl"
    path.unlink(missing_ok=True)
    run = run_pytest(project, argv, expect, clean_environment(**{TIMELINE_VARIABLE: str(path)}))
    return Timeline.load(path, run)


def describe_timeline(title: str, timeline: Timeline) -> str:
    """A line per process: when it started, was ready, collected, ended."""
    c = timeline.controller
    zero = c["created"]
    lines = [
        f"{title}: wall {timeline.run.wall:.2f}s, CPU of all processes {timeline.run.cpu:.2f}s "
        f"(controller {c['cpu']:.2f}s)",
        "  seconds since the controller process started:",
    ]
    marks = c["marks"]
    if "setupnodes" in marks:
        ready_at = [t - c["created"] for t in marks.get("workers_ready", [])]
        collected_at = [t - c["created"] for t in marks.get("workers_collected", [])]
        down_at = [t - c["created"] for t in marks.get("workers_down", [])]
        lines.append(
            f"  controller: conftest {timeline.at(c, 'conftest'):.2f}, sessionstart "
            f"{timeline.at(c, 'ready'):.2f}, setupnodes {timeline.at(c, 'setupnodes'):.2f}, "
            f"workers ready {min(ready_at):.2f}..{max(ready_at):.2f}, "
            f"collections in {min(collected_at):.2f}..{max(collected_at):.2f}, "
            f"first report {timeline.at(c, 'first_report'):.2f}, last report "
            f"{timeline.at(c, 'last_report'):.2f}, workers down {min(down_at):.2f}.."
            f"{max(down_at):.2f}, sessionfinish {timeline.at(c, 'finish'):.2f}, unconfigure "
            f"{timeline.at(c, 'unconfigure'):.2f}"
        )
        threads = ", ".join(f"{name} {cpu:.2f}" for name, cpu in c["threads"].items())
        lines.append(f"  controller CPU by thread (s): {threads}")
    else:
        lines.append(
            f"  (one process) conftest {timeline.at(c, 'conftest'):.2f}, ready "
            f"{timeline.at(c, 'ready'):.2f}, collection {timeline.at(c, 'collect_start'):.2f}"
            f"..{timeline.at(c, 'collect_end'):.2f} "
            f"({timeline.at(c, 'collect_end') - timeline.at(c, 'collect_start'):.2f}s), "
            f"end {timeline.at(c, 'unconfigure'):.2f}"
        )
    parents = {w["parent"]: w["parent_created"] for w in timeline.workers}
    for pid, created in sorted(parents.items()):
        if pid != c["pid"]:
            lines.append(
                f"  workers' parent {pid} (not the controller): started {created - zero:.2f}"
            )
    if timeline.workers:
        lines.append(
            "  worker  created  start->ready  ready  collect  (s)    last report  unconf  CPU s"
        )
    for w in timeline.workers:
        created, ready = timeline.at(w, "created"), timeline.at(w, "ready")
        start, end = timeline.at(w, "collect_start"), timeline.at(w, "collect_end")
        finish, last = timeline.at(w, "unconfigure"), timeline.at(w, "last_report")
        lines.append(
            f"  {w['who']:<6}  {created:7.2f}  {ready - created:12.2f}  {ready:5.2f}  "
            f"{start:5.2f}..{end:5.2f} ({end - start:4.2f})  {last:11.2f}  "
            f"{finish:6.2f}  {w['cpu']:5.2f}"
        )
    if timeline.workers:
        to_ready = [timeline.at(w, "ready") - timeline.at(w, "created") for w in timeline.workers]
        collect = [
            timeline.at(w, "collect_end") - timeline.at(w, "collect_start")
            for w in timeline.workers
        ]
        lines.append(
            f"  medians: start->ready {statistics.median(to_ready):.2f}s, "
            f"collection {statistics.median(collect):.2f}s; "
            f"workers' CPU summed {sum(w['cpu'] for w in timeline.workers):.2f}s"
        )
    recorded = c["cpu"] + sum(w["cpu"] for w in timeline.workers)
    lines.append(
        f"  CPU not in the records above (process exits, other processes): "
        f"{timeline.run.cpu - recorded:.2f}s"
    )
    return "\n".join(lines)


def profile(project: Path, progress: Callable[[str], None]) -> None:
    """Where the time of ``-p asyncgw.xdist -n 8`` goes (printed, not recorded)."""
    progress("profiling...")
    prof = project / "controller.prof"
    argv = pytest_argv("asyncgw", 8)
    cprofile = [sys.executable, "-m", "cProfile", "-o", str(prof), *argv[1:]]
    run = run_pytest(project, cprofile)
    print()
    print(f"== cProfile of the controller's main thread: {' '.join(cprofile[1:])}")
    print(f"   (wall {run.wall:.2f}s under the profiler; the facade's loop thread is not in it)")
    for key in ("cumulative", "tottime"):
        print(f"-- top 25 by {key}")
        stats = pstats.Stats(str(prof), stream=sys.stdout)
        stats.strip_dirs().sort_stats(key).print_stats(25)

    (project / "conftest.py").write_text(TIMELINE_CONFTEST)
    try:
        # A discarded run first: it writes the conftest's bytecode.
        run_pytest(project, [*PYTEST, "--collect-only"], COLLECTED)
        timelines = [
            ("-n 0 --collect-only", run_timeline(project, [*PYTEST, "--collect-only"], COLLECTED)),
            ("-n 0", run_timeline(project, [*PYTEST, "-n", "0"], PASSED)),
            ("execnet -n 8", run_timeline(project, pytest_argv("execnet", 8), PASSED)),
            ("asyncgw -n 8", run_timeline(project, pytest_argv("asyncgw", 8), PASSED)),
        ]
    finally:
        (project / "conftest.py").unlink()
    print()
    print("== timelines (one run each, with a timing conftest.py)")
    for title, timeline in timelines:
        print(describe_timeline(title, timeline))
        print()
    cpus = os.cpu_count() or 1
    asyncgw_run = timelines[-1][1].run
    print(
        f"asyncgw -n 8: CPU {asyncgw_run.cpu:.2f}s over {cpus} cpus needs at least "
        f"{asyncgw_run.cpu / cpus:.2f}s of wall; it took {asyncgw_run.wall:.2f}s"
    )


# -- running


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="measured rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 round, -n 0 and -n 2 only")
    parser.add_argument("--profile", action="store_true", help="then profile asyncgw -n 8 once")
    parser.add_argument(
        "--json", metavar="PATH", help="results file (default: docs/_results/xdist.json)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = 1
    args.workers = (0, 2) if args.quick else (0, 2, 8)
    args.roundtrips = 2_000 if args.quick else 5_000
    args.roundtrip_repeat = 3 if args.quick else 5
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment_info()
    recorder = Recorder("xdist", peers=["execnet", "pytest", "pytest-xdist"], quick=args.quick)
    if not args.quick and args.repeat < 3:
        recorder.reduced = f"{args.repeat} measured round(s) instead of 3 (a loaded machine)"
    recorder.notes.append(
        "On execnet, xdist starts its workers one at a time (execnet has no parallel start); "
        "with -p asyncgw.xdist the workers fork from asyncgw's fork server together."
    )

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    progress(f"benchmarking xdist ({env['cpus']} cpus)...")
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="bench_xdist_") as directory:
            project = Path(directory)
            make_project(project)
            rows, cpu = measure_xdist(project, args.workers, args.repeat, 1, progress)
            rt_started = time.perf_counter()
            roundtrip = measure_roundtrip(args.roundtrip_repeat, args.roundtrips)
            progress(f"  round trip: {time.perf_counter() - rt_started:.1f}s")
            text = report(env, args, rows, cpu, roundtrip)
            print(text)
            print(f"total {time.perf_counter() - started:.0f}s")
            recorder.write(
                [*rows, *cpu, roundtrip],
                [Target(f"-n {n}", f"-n {n}", "asyncgw", "execnet", XDIST_TARGETS[n])
                 for n in args.workers if n in XDIST_TARGETS],
                extra={"cpu_rows": [r.workload for r in cpu]},
                config={"workers": list(args.workers), "repeat": args.repeat,
                        "roundtrips": args.roundtrips},
                path=args.json,
            )  # fmt: skip
            if args.profile:
                profile(project, progress)
    except RunFailed as failure:
        progress(f"FAILED:\n{failure}")
        return 1
    finally:
        leftovers = reap_children()
        if leftovers:
            progress(f"WARNING: killed leftover child processes: {', '.join(leftovers)}")
    return 1 if leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
