"""asyncgw's parallel map beside the stdlib's pools, loky and dask, in one run.

Usage::

    python benchmarks/bench_executor.py [--quick] [--repeat N] [--tasks N] [--json out.json]

Contenders, each with 2 workers (this machine has 2 cpus), used as their
users write them:

- ``asyncgw``: ``await pool.map(fn, items)`` on ``asyncgw.Pool(2)`` (two
  popen gateways) under ``asyncio.run``; chunks sized automatically;
- ``asyncgw.sync``: ``list(Executor(2).map(fn, items))``, the blocking
  ``concurrent.futures.Executor`` (its event loop runs on its own thread);
- ``ProcessPoolExecutor``: ``list(executor.map(fn, items, chunksize=c))``;
- ``mp.Pool.imap``: ``list(multiprocessing.Pool(2).imap(fn, items, c))``;
- ``loky``: ``loky.ProcessPoolExecutor(2).map(fn, items, chunksize=c)``;
- ``dask``: ``client.gather(client.map(fn, items, pure=False))`` on a
  ``distributed.LocalCluster`` of 2 worker processes, 1 thread each.

Rows:

- per-task overhead: a map of ``--tasks`` (100 000) trivial tasks
  (``x + 1``) on a started pool, in microseconds per task. The stdlib's
  pools and loky at chunksize 1 (their default) and at their best
  chunksize of 10, 100, 1000 and 10 000 (each measured; the row shows the
  best median); asyncgw with automatic chunks, and at its best explicit
  chunksize too. dask maps a tenth of the tasks (it schedules each one:
  100 000 take minutes); its figure is per task all the same.
- CPU-bound map: 64 tasks of a pure-Python loop (about 15 ms each here) on
  a started pool; the speedup is the time of the same tasks run in this
  process, one after the other (``1 process``), over the contender's.
- pool start and stop: make the pool, run one trivial task (the stdlib's
  pools start their processes on first use), shut it down and wait for
  its processes; in this process, after the warm-up round. The stdlib's
  pool forks this process (no new interpreter: Linux's default start
  method up to Python 3.13); its ``forkserver`` start method (the default
  from 3.14) is measured beside it, as what starting fresh interpreters
  costs.

Every result is checked (sums), so a fast wrong answer fails the run. The
contenders take turns, row by row, and which goes first rotates each
round; the first round is a discarded warm-up; the table shows the median
of ``--repeat`` rounds (3) and ``±``, half the min-max range relative to
the median. The header gives the load average before and after: other
load on a 2-cpu machine shows in every figure. The results go to
``docs/_results/executor.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime
import importlib.metadata
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil
from harness import Recorder, Result, Target

import asyncgw
from asyncgw.sync import Executor

CHUNKSIZES = (10, 100, 1000, 10_000)
CPU_TASKS = 64
CPU_LOOP = 150_000
WORKERS = 2


def trivial(x):
    return x + 1


def burn(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


# ------------------------------------------------------------------ contenders


class Contender:
    """One library: how it starts a pool, maps, and stops."""

    name = ""
    chunksizes: tuple[int | None, ...] = (1, *CHUNKSIZES)
    task_share = 1  # maps 1/task_share of the tasks (dask)

    def start(self) -> Any:
        raise NotImplementedError

    def map(
        self, pool: Any, fn: Callable[[int], int], items: range, chunksize: int | None
    ) -> list[int]:
        raise NotImplementedError

    def stop(self, pool: Any) -> None:
        raise NotImplementedError


class AsyncgwSync(Contender):
    name = "asyncgw.sync"
    chunksizes = (None, *CHUNKSIZES)

    def start(self) -> Any:
        return Executor(WORKERS)

    def map(
        self, pool: Any, fn: Callable[[int], int], items: range, chunksize: int | None
    ) -> list[int]:
        return list(pool.map(fn, items, chunksize=chunksize))

    def stop(self, pool: Any) -> None:
        pool.shutdown()


class AsyncgwAsync(Contender):
    """The async Pool: each sample runs under its own asyncio.run."""

    name = "asyncgw"
    chunksizes = (None, *CHUNKSIZES)

    def timed(
        self, fn: Callable[[int], int], items: range, chunksize: int | None
    ) -> tuple[float, list[int]]:
        async def run() -> tuple[float, list[int]]:
            async with asyncgw.Pool(WORKERS) as pool:
                await pool.map(fn, range(100))
                started = time.perf_counter()
                results = await pool.map(fn, items, chunksize=chunksize)
                return time.perf_counter() - started, results

        return asyncio.run(run())

    def start_stop(self) -> float:
        async def run() -> None:
            async with asyncgw.Pool(WORKERS) as pool:
                await pool.submit(trivial, 1)

        started = time.perf_counter()
        asyncio.run(run())
        return time.perf_counter() - started


class StdlibProcessPool(Contender):
    name = "ProcessPoolExecutor"

    def start(self) -> Any:
        return concurrent.futures.ProcessPoolExecutor(WORKERS)

    def map(
        self, pool: Any, fn: Callable[[int], int], items: range, chunksize: int | None
    ) -> list[int]:
        return list(pool.map(fn, items, chunksize=chunksize or 1))

    def stop(self, pool: Any) -> None:
        pool.shutdown()


class StdlibForkserver(StdlibProcessPool):
    """Start row only: the stdlib's pool with the start method that is
    the default on Linux from Python 3.14 (a fresh interpreter forks the
    workers, as asyncgw's popen gateways are forked)."""

    name = "ProcessPoolExecutor (forkserver)"

    def start(self) -> Any:
        context = multiprocessing.get_context("forkserver")
        return concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=context)


class MultiprocessingPool(Contender):
    name = "mp.Pool.imap"

    def start(self) -> Any:
        return multiprocessing.Pool(WORKERS)

    def map(
        self, pool: Any, fn: Callable[[int], int], items: range, chunksize: int | None
    ) -> list[int]:
        return list(pool.imap(fn, items, chunksize or 1))

    def stop(self, pool: Any) -> None:
        pool.close()
        pool.join()


class Loky(Contender):
    name = "loky"

    def start(self) -> Any:
        import loky

        return loky.ProcessPoolExecutor(WORKERS)

    def map(
        self, pool: Any, fn: Callable[[int], int], items: range, chunksize: int | None
    ) -> list[int]:
        return list(pool.map(fn, items, chunksize=chunksize or 1))

    def stop(self, pool: Any) -> None:
        pool.shutdown()


class Dask(Contender):
    name = "dask"
    chunksizes = (None,)
    task_share = 10

    def start(self) -> Any:
        import logging

        from distributed import Client, LocalCluster

        logging.getLogger("distributed").setLevel(logging.ERROR)
        cluster = LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
        )
        return Client(cluster), cluster

    def map(
        self, pool: Any, fn: Callable[[int], int], items: range, chunksize: int | None
    ) -> list[int]:
        client, _ = pool
        return list(client.gather(client.map(fn, items, pure=False)))

    def stop(self, pool: Any) -> None:
        client, cluster = pool
        client.close()
        cluster.close()


def available() -> list[Contender]:
    contenders: list[Contender] = [
        AsyncgwAsync(),
        AsyncgwSync(),
        StdlibProcessPool(),
        MultiprocessingPool(),
    ]
    for module, contender in (("loky", Loky()), ("distributed", Dask())):
        try:
            __import__(module)
        except ImportError:
            print(f"({contender.name} is not installed: left out)", file=sys.stderr)
        else:
            contenders.append(contender)
    return contenders


# ------------------------------------------------------------------ measuring


def label(contender: Contender, chunksize: int | None) -> str:
    return f"{contender.name} {'auto' if chunksize is None else chunksize}"


def measure_tasks(contender: Contender, tasks: int, row: Result) -> None:
    items = range(tasks // contender.task_share)
    expected = sum(items) + len(items)
    for chunksize in contender.chunksizes:
        if isinstance(contender, AsyncgwAsync):
            seconds, results = contender.timed(trivial, items, chunksize)
        else:
            pool = contender.start()
            try:
                contender.map(pool, trivial, range(100), chunksize)
                started = time.perf_counter()
                results = contender.map(pool, trivial, items, chunksize)
                seconds = time.perf_counter() - started
            finally:
                contender.stop(pool)
        assert sum(results) == expected, (contender.name, chunksize)
        row.add(label(contender, chunksize), seconds / len(items) * 1e6)


def measure_cpu(contender: Contender | None, row: Result) -> None:
    items = [CPU_LOOP] * CPU_TASKS
    expected = burn(CPU_LOOP) * CPU_TASKS
    if contender is None:
        started = time.perf_counter()
        results = [burn(n) for n in items]
        row.add("1 process", time.perf_counter() - started)
    elif isinstance(contender, AsyncgwAsync):
        seconds, results = contender.timed(burn, items, None)  # type: ignore[arg-type]
        row.add(contender.name, seconds)
    else:
        pool = contender.start()
        try:
            contender.map(pool, trivial, range(10), None)
            started = time.perf_counter()
            results = contender.map(pool, burn, items, None)  # type: ignore[arg-type]
            row.add(contender.name, time.perf_counter() - started)
        finally:
            contender.stop(pool)
    assert sum(results) == expected


def measure_start(contender: Contender, row: Result) -> None:
    children_before = {child.pid for child in psutil.Process().children(recursive=True)}
    if isinstance(contender, AsyncgwAsync):
        seconds = contender.start_stop()
    else:
        started = time.perf_counter()
        pool = contender.start()
        assert contender.map(pool, trivial, range(1), None) == [1]
        contender.stop(pool)
        seconds = time.perf_counter() - started
    row.add(contender.name, seconds * 1e3)
    left = [c for c in psutil.Process().children(recursive=True) if c.pid not in children_before]
    psutil.wait_procs(left, timeout=5)


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[Result]]:
    contenders = available()
    tasks_row = Result(f"per-task overhead, {args.tasks:,} trivial tasks", "us", False)
    cpu_row = Result(f"CPU-bound map, {CPU_TASKS} tasks", "s", False)
    start_row = Result("pool start+stop, 2 workers", "ms", False)
    env = environment(contenders)
    env["load_before"] = os.getloadavg()[0]
    begun = time.perf_counter()
    for round_ in range(args.repeat + 1):
        warm = round_ == 0
        shift = round_ % len(contenders)
        order = contenders[shift:] + contenders[:shift]
        rows = (
            tuple(Result("", "", False) for _ in range(3))
            if warm
            else (tasks_row, cpu_row, start_row)
        )
        print(f"round {round_}{' (warm-up)' if warm else ''}", file=sys.stderr, flush=True)
        for contender in order:
            measure_tasks(contender, args.tasks if not warm else args.tasks // 10, rows[0])
        for contender in [None, *order]:
            measure_cpu(contender, rows[1])
        for contender in [*order, StdlibForkserver()]:
            measure_start(contender, rows[2])
    env["load_after"] = os.getloadavg()[0]
    env["seconds"] = time.perf_counter() - begun
    return env, [tasks_row, cpu_row, start_row]


def environment(contenders: list[Contender]) -> dict[str, Any]:
    versions = {}
    for contender in contenders:
        package = {
            "asyncgw.sync": "asyncgw",
            "mp.Pool.imap": None,
            "ProcessPoolExecutor": None,
        }.get(contender.name, contender.name)
        if package == "dask":
            package = "distributed"
        if package:
            versions[package] = importlib.metadata.version(package)
    return {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": versions,
    }


# ------------------------------------------------------------------ reporting


def figure(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def best(row: Result, name: str) -> str | None:
    """The label of ``name``'s lowest median in ``row`` (over chunksizes)."""
    labels = [
        key for key in row.samples if key.rsplit(" ", 1)[0] == name and not key.endswith(" 1")
    ]
    labels = [key for key in labels if not key.endswith(" auto")] or labels
    return min(labels, key=row.median) if labels else None


def report(env: dict[str, Any], rows: list[Result], args: argparse.Namespace) -> str:
    tasks_row, cpu_row, start_row = rows
    versions = ", ".join(f"{name} {version}" for name, version in env["versions"].items())
    lines = [
        f"asyncgw parallel map beside the stdlib's pools, loky and dask: {versions}; {env['date']}",
        f"Python {env['python']}, {env['platform']}, {env['cpus']} cpus, {WORKERS} workers each; "
        f"load average (1 min) {env['load_before']:.2f} before, {env['load_after']:.2f} after; "
        f"{env['seconds']:.0f}s",
        f"median of {args.repeat} rounds after 1 warm-up, taking turns; ±: half the min-max range",
        "",
    ]
    agw_auto = tasks_row.median("asyncgw auto")
    sync_auto = tasks_row.median("asyncgw.sync auto")
    table = [("per-task overhead (us per task)", "", "", "")]
    entries: list[tuple[str, str]] = [
        ("asyncgw auto", "asyncgw, automatic chunks"),
        ("asyncgw.sync auto", "asyncgw.sync Executor, automatic chunks"),
    ]
    asyncgw_best = best(tasks_row, "asyncgw")
    if asyncgw_best:
        entries.append(
            (asyncgw_best, f"asyncgw, best chunksize ({asyncgw_best.rsplit(' ', 1)[1]})")
        )
    for name in ("ProcessPoolExecutor", "mp.Pool.imap", "loky"):
        if f"{name} 1" in tasks_row.samples:
            entries.append((f"{name} 1", f"{name}, chunksize 1"))
            top = best(tasks_row, name)
            if top:
                entries.append((top, f"{name}, best chunksize ({top.rsplit(' ', 1)[1]})"))
    if "dask auto" in tasks_row.samples:
        entries.append(("dask auto", f"dask.distributed ({args.tasks // Dask.task_share:,} tasks)"))
    for key, title in entries:
        median = tasks_row.median(key)
        table.append(
            (
                title,
                f"{figure(median)} ±{tasks_row.spread(key):.0%}",
                f"{agw_auto / median:.3f}",
                f"{sync_auto / median:.3f}",
            )
        )
    lines += render(["row", "us/task", "asyncgw/this", "sync/this"], table)
    lines.append("")

    single = cpu_row.median("1 process")
    cpu_table = [
        (
            name,
            f"{figure(cpu_row.median(name))} ±{cpu_row.spread(name):.0%}",
            f"{single / cpu_row.median(name):.2f}x",
        )
        for name in cpu_row.samples
    ]
    lines += render([f"CPU-bound map, {CPU_TASKS} tasks", "seconds", "speedup"], cpu_table)
    lines.append("")
    ppe_start = start_row.median("ProcessPoolExecutor")
    start_table = [
        (
            name,
            f"{figure(start_row.median(name))} ±{start_row.spread(name):.0%}",
            f"{start_row.median(name) / ppe_start:.2f}",
        )
        for name in start_row.samples
    ]
    lines += render(["pool start+stop, 2 workers", "ms", "this/ProcessPoolExecutor"], start_table)
    lines.append("")

    lines.append("targets (medians as printed):")
    ppe1 = tasks_row.median("ProcessPoolExecutor 1")
    lines.append(
        target(
            "per-task overhead, asyncgw auto / ProcessPoolExecutor chunksize 1",
            agw_auto / ppe1,
            0.05,
        )
    )
    lines.append(
        target(
            "per-task overhead, asyncgw.sync auto / ProcessPoolExecutor chunksize 1",
            sync_auto / ppe1,
            0.2,
        )
    )
    if "dask auto" in tasks_row.samples:
        lines.append(
            target(
                "per-task overhead, asyncgw auto / dask",
                agw_auto / tasks_row.median("dask auto"),
                0.1,
            )
        )
    best_any = min(tasks_row.median(key) for key in tasks_row.samples if not key.endswith(" auto"))
    best_key = min(
        (key for key in tasks_row.samples if not key.endswith(" auto")), key=tasks_row.median
    )
    lines.append(
        target(
            f"automatic chunks / the best chunksize of any contender ({best_key})",
            agw_auto / best_any,
            1.2,
        )
    )
    speedup = single / cpu_row.median("asyncgw")
    lines.append(target("CPU-bound speedup of asyncgw at 2 workers", speedup, 1.8, higher=True))
    lines.append(
        target(
            "pool start+stop, asyncgw / ProcessPoolExecutor",
            start_row.median("asyncgw") / ppe_start,
            2.0,
        )
    )
    lines.append("")
    lines.append(
        "us: microseconds per task, map of a started pool; ratios: asyncgw's median over the row's."
    )
    lines.append("numpy arrays in and out per task: benchmarks/bench_numpy.py (numpy.json).")
    return "\n".join(lines)


def target_list(rows: list[Result]) -> list[Target]:
    """The targets :func:`report` prints, as results-file entries."""
    tasks_row, cpu_row, start_row = rows
    tasks, cpu, start = tasks_row.workload, cpu_row.workload, start_row.workload
    found = [
        Target("per-task overhead, asyncgw", tasks, "asyncgw auto", "ProcessPoolExecutor 1", 0.05),
        Target("per-task overhead, asyncgw.sync", tasks, "asyncgw.sync auto",
               "ProcessPoolExecutor 1", 0.2),
        Target("CPU-bound speedup at 2 workers (1 process / asyncgw)", cpu, "1 process",
               "asyncgw", 1.8, at_most=False),
        Target("pool start+stop", start, "asyncgw", "ProcessPoolExecutor", 2.0),
    ]  # fmt: skip
    if "dask auto" in tasks_row.samples:
        found.append(Target("per-task overhead against dask", tasks, "asyncgw auto", "dask auto",
                            0.1))  # fmt: skip
    fixed = [key for key in tasks_row.samples if not key.endswith(" auto")]
    if fixed:
        best_key = min(fixed, key=lambda key: tasks_row.median(key) or 0.0)
        found.append(Target("automatic chunks against the best chunksize of any contender",
                            tasks, "asyncgw auto", best_key, 1.2))  # fmt: skip
    return found


def target(what: str, value: float, bound: float, higher: bool = False) -> str:
    ok = value >= bound if higher else value <= bound
    sign = ">=" if higher else "<="
    return f"  {what}: {value:.3f} (target {sign} {bound}): {'met' if ok else 'missed'}"


def render(header: list[str], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(cells[i])) for cells in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...] | list[str]) -> str:
        return "  ".join(
            cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(cells)
        )

    title = line(header)
    return [title, "-" * len(title), *(line(cells) for cells in rows)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 000 tasks, 1 round")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--json", help="results file (default: docs/_results/executor.json)")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.repeat = 10_000, 1
    recorder = Recorder("executor", quick=args.quick)
    env, rows = run(args)
    recorder.peers = list(env["versions"])
    text = report(env, rows, args)
    print(text)
    recorder.notes.append(
        f"{WORKERS} workers each; us: microseconds per task, map of a started pool; "
        "dask.distributed runs a smaller share of the tasks."
    )
    recorder.write(
        rows, target_list(rows), config={"tasks": args.tasks, "repeat": args.repeat},
        path=args.json,
    )  # fmt: skip
    # The stdlib's and loky's helpers (fork server, resource tracker) live
    # as long as this process, by design; anything else is a leak.
    left = [child for child in psutil.Process().children(recursive=True) if not helper(child)]
    _, alive = psutil.wait_procs(left, timeout=5)
    for child in alive:
        child.kill()
    if alive:
        print(f"child processes left behind: {[describe(c) for c in alive]}", file=sys.stderr)
        return 1
    return 0


def helper(process: psutil.Process) -> bool:
    return any(name in " ".join(describe(process)) for name in ("resource_tracker", "forkserver"))


def describe(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return [str(process.pid)]


if __name__ == "__main__":
    sys.exit(main())
