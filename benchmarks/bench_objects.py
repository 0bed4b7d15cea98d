"""asyncgw's remote objects beside rpyc (classic) and Pyro5, in one run.

Usage::

    python benchmarks/bench_objects.py [--quick] [--repeat N] [--profile] [--json out.json]

Every contender serves the same class, :class:`Counter` (its source is
shipped to the remote interpreter by each: ``gateway.create(Counter)``,
rpyc's ``conn.execute``, the Pyro5 server's ``exec``), and is used as its
users write it:

- asyncgw: ``await gateway.create(Counter)`` on a popen gateway of a fresh
  ``asyncgw.Group``, under ``asyncio.run``;
- asyncgw.sync: ``asyncgw.sync.Group(["popen"])[0].create(Counter)``, the
  blocking facade (its event loop runs on its own thread);
- rpyc: ``rpyc.utils.classic.connect_subproc()``, a classic server over the
  child's stdio pipes, and the netref of ``conn.eval("Counter()")``;
- Pyro5: a ``Pyro5.api.Daemon`` on 127.0.0.1 (TCP, an ephemeral port) in a
  child python serving ``expose(Counter)()``, and a ``Pyro5.api.Proxy``;
  Pyro5's defaults otherwise (serpent, thread pool server).

Rows, in microseconds per operation unless said:

- method call: ``c.add(1)`` (``await`` for asyncgw). rpyc's ``c.add`` is a
  round trip of its own (it returns a netref of the bound method) before the
  call's; that is what its users write, so it is measured.
- method held: ``add = c.add`` once, then ``add(1)``: one round trip for
  every contender (issue 21's target: at most 0.7 of rpyc's).
- 3-attribute chain: ``await c.a.b.c`` / ``fetch(c.a.b.c)`` / rpyc's
  ``c.a.b.c`` (three round trips). Pyro5 proxies give methods and exposed
  properties only, and pass other objects by value (serpent cannot send a
  ``SimpleNamespace`` back as one), so its column is what its users write
  instead: ``c.get_abc()``, a method of the class that returns ``a.b.c``.
- stream: iterating ``c.numbers(n)``, a remote generator, in items/s:
  asyncgw fetches batches, rpyc and Pyro5 fetch item by item (a round trip
  each: Pyro5's item streaming, rpyc's ``next`` on a netref), so they
  iterate fewer items per sample, to keep the run short; a rate does not
  depend on the count once it is in the thousands.
- transport echo (the floor, information): asyncgw's channel round trip,
  ``send(i)`` then ``receive()`` against ``for x in channel:
  channel.send(x)``; rpyc's ``conn.ping(i)``, its protocol's echo. Pyro5
  has no call below a method call.

Each sample runs in a fresh child process of its contender (a new gateway,
connection or server, with the object made anew), does ``--warm`` untimed
operations, then times ``--calls`` operations with ``time.perf_counter``
and checks every result (the counter's final value, the chain's value, the
stream's sum): a fast wrong answer fails the run. The contenders take
turns, sample by sample, and which goes first rotates each round, so that
drift on the machine (frequency, other load, which cores the scheduler
picks) spreads over all alike; the first round is a discarded warm-up and
the table shows the median of ``--repeat`` rounds and ``±``, half the
min-max range relative to the median. The blocking clients (asyncgw.sync,
rpyc, Pyro5) run on the main thread, where nothing of asyncgw's async API
is in flight meanwhile. A second table has the CPU time per operation of
both sides (every thread of this process, ``time.process_time``, plus the
contender's child processes, psutil, read outside the timed loop), which
other load on the machine moves less than the wall time; the header gives
the load average before and after.

The issue's targets: asyncgw's method call at most 0.5 of rpyc's, its held
method call at most 0.7 of rpyc's, and its 3-attribute chain at most 0.4 of
rpyc's; the report says met or missed for
the async API and shows the blocking facade's ratios beside it. The table
is printed and written, with every sample, to ``docs/_results/objects.json``.
``--profile`` then looks, once, at where a call's time goes: wall and CPU
per operation (this process, and its children) for each contender's call
and echo, and cProfile of the local side over 5000 asyncgw calls and 5000
channel echoes; printed only.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import importlib.metadata
import inspect
import os
import platform
import pstats
import select
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import Pyro5.api
import rpyc
from harness import (
    EXIT_TIMEOUT,
    Recorder,
    Result,
    Target,
    format_cell,
    format_ratio,
    format_rows,
    format_value,
    reap_children,
)
from rpyc.utils import classic

import asyncgw
import asyncgw.objects  # (gateway.create's layer registers itself on import)
import asyncgw.sync

IMPLEMENTATIONS = ("asyncgw", "sync", "rpyc", "pyro5")
LABELS = {"asyncgw": "asyncgw", "sync": "asyncgw.sync", "rpyc": "rpyc", "pyro5": "Pyro5"}
ROWS = ("call", "held", "chain", "stream", "echo")
TITLES = {
    "call": "method call c.add(1)",
    "held": "method held: add(1)",
    "chain": "3-attribute chain c.a.b.c",
    "stream": "stream c.numbers(n)",
    "echo": "transport echo (floor)",
}
#: asyncgw's async API against rpyc, per row: the issue's upper bounds.
TARGETS = {"call": 0.45, "held": 0.7, "chain": 0.4}
TARGET_NOTES = {
    "call": "rpyc's call looks the method up in a round trip of its own",
    "held": "one round trip for both",
    "chain": "rpyc's chain is three round trips",
}
#: What each contender does in the chain row.
CHAIN_CODE = {
    "asyncgw": "await c.a.b.c",
    "sync": "fetch(c.a.b.c)",
    "rpyc": "c.a.b.c",
    "pyro5": "c.get_abc() *",
}
ECHO_LOOP = "for item in channel:\n    channel.send(item)\n"
#: The same targets as results-file entries, for both APIs.
RESULT_TARGETS = tuple(
    Target(f"{TITLES[row]}, {LABELS[mine]}", TITLES[row], mine, "rpyc", bound,
           note=TARGET_NOTES[row])
    for row, bound in TARGETS.items()
    for mine in ("asyncgw", "sync")
)  # fmt: skip
#: Seconds the Pyro5 server may take to print its URI.
SERVER_START_TIMEOUT = 30.0


class Counter:
    """The remote class of every contender; self-contained, because its
    source is run remotely without this module."""

    def __init__(self, start: int = 0) -> None:
        import types

        self.value = start
        self.a = types.SimpleNamespace(b=types.SimpleNamespace(c=42))

    def add(self, n: int) -> int:
        self.value += n
        return self.value

    def get_abc(self) -> int:
        return self.a.b.c  # type: ignore[no-any-return]

    # Quoted: the remote side runs this source without this module's imports.
    def numbers(self, n: int) -> "Iterator[int]":  # noqa: UP037
        yield from range(n)


CHAIN_VALUE = 42  # Counter().a.b.c
COUNTER_SOURCE = textwrap.dedent(inspect.getsource(Counter))

PYRO5_SERVER = f"""\
import Pyro5.api

{COUNTER_SOURCE}

daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
uri = daemon.register(Pyro5.api.expose(Counter)(), "counter")
print(uri, flush=True)
daemon.requestLoop()
"""


@dataclass(frozen=True)
class Config:
    """Sizes and repetitions of one run."""

    repeat: int
    warmup: int
    #: Untimed operations at the start of each sample.
    warm: int
    #: Timed operations per sample (calls, chains, echoes).
    calls: int
    #: Items per stream sample: asyncgw, and the item-by-item peers.
    stream_items: int
    stream_items_peers: int


class WrongAnswer(Exception):
    """Raised when a contender's result is not the expected one; carries
    the contender, the row and both values."""

    def __init__(self, name: str, row: str, got: object, expected: object) -> None:
        self.name, self.row, self.got, self.expected = name, row, got, expected
        super().__init__(f"{LABELS[name]}, {row}: got {got!r}, expected {expected!r}")


def check(name: str, row: str, got: object, expected: object) -> None:
    if got != expected:
        raise WrongAnswer(name, row, got, expected)


def stream_items(name: str, config: Config) -> int:
    return config.stream_items if name in ("asyncgw", "sync") else config.stream_items_peers


# -- measuring one sample: wall time, and the CPU time of both sides


def descendants_cpu() -> float:
    """User+system CPU seconds of this process's live descendants (the
    workers and servers of the contenders)."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        with suppress(psutil.NoSuchProcess):
            times = child.cpu_times()
            total += times.user + times.system
    return total


class Stopwatch:
    """Wall time of a ``with`` block, and the CPU time that this process
    (every thread) and its children spent in it. The children are read
    outside the wall time and outside this process's CPU time."""

    wall = local = children = 0.0

    def __enter__(self) -> Stopwatch:
        self._children = descendants_cpu()
        self._local = time.process_time()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wall = time.perf_counter() - self._started
        self.local = time.process_time() - self._local
        self.children = descendants_cpu() - self._children

    def sample(self, row: str, count: int) -> Sample:
        """µs per operation, or items/s for the stream; CPU µs per either."""
        value = count / self.wall if row == "stream" else self.wall / count * 1e6
        return Sample(value, (self.local + self.children) / count * 1e6)


@dataclass(frozen=True)
class Sample:
    #: µs per operation (items/s for the stream).
    value: float
    #: CPU µs per operation (per item), this process and its children.
    cpu: float


def expected(row: str, config: Config) -> int:
    """The last result of a row's timed loop: the counter after every
    ``add(1)``, the chain's value, the last echo."""
    if row in ("call", "held"):
        return config.warm + config.calls
    return CHAIN_VALUE if row == "chain" else config.calls - 1


class BlockingOps:
    """A blocking contender's operations, on one fresh remote counter."""

    def call(self, i: int) -> object:
        raise NotImplementedError

    def held(self, i: int) -> object:
        raise NotImplementedError

    def chain(self, i: int) -> object:
        raise NotImplementedError

    def echo(self, i: int) -> object:
        raise NotImplementedError

    def stream(self, n: int) -> int:
        """The sum of ``numbers(n)``, iterated."""
        raise NotImplementedError


def drive(name: str, row: str, config: Config, ops: BlockingOps) -> Sample:
    """The row's untimed warm-up and timed loop, results checked."""
    if row == "stream":
        ops.stream(config.warm)
        items = stream_items(name, config)
        with Stopwatch() as watch:
            total = ops.stream(items)
        check(name, row, total, items * (items - 1) // 2)
        return watch.sample(row, items)
    operation: Callable[[int], object] = getattr(ops, row)
    for i in range(config.warm):
        operation(i)
    with Stopwatch() as watch:
        for i in range(config.calls):
            got = operation(i)
    check(name, row, got, expected(row, config))
    return watch.sample(row, config.calls)


# -- the contenders: each sample in a fresh child process


async def asyncgw_sample(row: str, config: Config) -> Sample:
    """The async API, written out: its operations are awaited."""
    n, warm = config.calls, config.warm
    async with asyncgw.Group(exit_timeout=EXIT_TIMEOUT) as group:
        gateway = await group.makegateway("popen")
        if row == "echo":
            channel = gateway.remote_exec(ECHO_LOOP)
            for i in range(warm):
                await channel.send(i)
                await channel.receive()
            with Stopwatch() as watch:
                for i in range(n):
                    await channel.send(i)
                    got = await channel.receive()
            channel.close()
        else:
            c = await gateway.create(Counter)
            if row == "stream":
                async for _ in c.numbers(warm):
                    pass
                items = config.stream_items
                total = 0
                with Stopwatch() as watch:
                    async for item in c.numbers(items):
                        total += item
                check("asyncgw", row, total, items * (items - 1) // 2)
                return watch.sample(row, items)
            if row == "chain":
                for _ in range(warm):
                    await c.a.b.c
                with Stopwatch() as watch:
                    for _ in range(n):
                        got = await c.a.b.c
            else:
                add = c.add  # "held": one chain object, awaited anew each time
                for _ in range(warm):
                    await c.add(1)
                with Stopwatch() as watch:
                    if row == "call":
                        for _ in range(n):
                            got = await c.add(1)
                    else:
                        for _ in range(n):
                            got = await add(1)
    check("asyncgw", row, got, expected(row, config))
    return watch.sample(row, n)


class SyncOps(BlockingOps):
    def __init__(self, gateway: asyncgw.sync.Gateway, row: str) -> None:
        if row == "echo":
            self.channel = gateway.remote_exec(ECHO_LOOP)
        else:
            self.c = gateway.create(Counter)
            self.add = self.c.add

    def call(self, i: int) -> object:
        return self.c.add(1)

    def held(self, i: int) -> object:
        return self.add(1)

    def chain(self, i: int) -> object:
        return asyncgw.sync.fetch(self.c.a.b.c)

    def echo(self, i: int) -> object:
        self.channel.send(i)
        return self.channel.receive()

    def stream(self, n: int) -> int:
        return sum(self.c.numbers(n))


def sync_sample(row: str, config: Config) -> Sample:
    with asyncgw.sync.Group(["popen"]) as group:
        ops = SyncOps(group[0], row)
        sample = drive("sync", row, config, ops)
        if row == "echo":
            ops.channel.close()
        return sample


def rpyc_server_file() -> str:
    """``rpyc_classic.py`` of this interpreter's environment (what
    ``connect_subproc`` would find on ``PATH`` when that is activated)."""
    found = shutil.which("rpyc_classic.py", path=str(Path(sys.executable).parent))
    found = found or shutil.which("rpyc_classic.py")
    if found is None:
        raise RuntimeError("rpyc_classic.py (installed with rpyc) is not found")
    return found


@contextmanager
def rpyc_connection() -> Iterator[rpyc.Connection]:
    conn = classic.connect_subproc(rpyc_server_file())
    try:
        yield conn
    finally:
        conn.close()  # closes the child's stdin: it exits
        try:
            conn.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            conn.proc.kill()
            conn.proc.wait()


class RpycOps(BlockingOps):
    def __init__(self, conn: rpyc.Connection) -> None:
        self.conn = conn
        conn.execute(COUNTER_SOURCE)
        self.c = conn.eval("Counter()")
        self.add = self.c.add  # a netref of the bound method

    def call(self, i: int) -> object:
        return self.c.add(1)

    def held(self, i: int) -> object:
        return self.add(1)

    def chain(self, i: int) -> object:
        return self.c.a.b.c

    def echo(self, i: int) -> object:
        self.conn.ping(i)  # raises PingError unless i comes back
        return i

    def stream(self, n: int) -> int:
        return sum(self.c.numbers(n))


def rpyc_sample(row: str, config: Config) -> Sample:
    with rpyc_connection() as conn:
        return drive("rpyc", row, config, RpycOps(conn))


@contextmanager
def pyro5_proxy() -> Iterator[Pyro5.api.Proxy]:
    """A Pyro5 server in a child python, and a proxy to its counter."""
    server = subprocess.Popen(
        [sys.executable, "-c", PYRO5_SERVER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        # The server prints its URI once it listens.
        ready, _, _ = select.select([server.stdout], [], [], SERVER_START_TIMEOUT)
        uri = server.stdout.readline().strip() if ready else ""
        if not uri.startswith("PYRO:"):
            raise RuntimeError(f"the Pyro5 server did not start (it printed {uri!r})")
        with Pyro5.api.Proxy(uri) as proxy:
            yield proxy
    finally:
        server.terminate()
        try:
            server.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()


class Pyro5Ops(BlockingOps):
    def __init__(self, proxy: Pyro5.api.Proxy) -> None:
        self.c = proxy
        self.add = proxy.add

    def call(self, i: int) -> object:
        return self.c.add(1)

    def held(self, i: int) -> object:
        return self.add(1)

    def chain(self, i: int) -> object:
        return self.c.get_abc()

    def stream(self, n: int) -> int:
        return sum(self.c.numbers(n))


def pyro5_sample(row: str, config: Config) -> Sample:
    with pyro5_proxy() as proxy:
        return drive("pyro5", row, config, Pyro5Ops(proxy))


Sampler = Callable[[str, Config], Sample]

SAMPLERS: dict[str, Sampler] = {
    "asyncgw": lambda row, config: asyncio.run(asyncgw_sample(row, config)),
    "sync": sync_sample,
    "rpyc": rpyc_sample,
    "pyro5": pyro5_sample,
}


def contenders(row: str, among: Sequence[str] = IMPLEMENTATIONS) -> tuple[str, ...]:
    """Who is in a row (Pyro5 has no echo below a method call)."""
    return tuple(name for name in among if not (row == "echo" and name == "pyro5"))


def measure(
    config: Config,
    progress: Callable[[str], None],
    rows: Sequence[str] = ROWS,
    among: Sequence[str] = IMPLEMENTATIONS,
) -> tuple[list[Result], list[Result]]:
    """Per row, one ``Result`` of times (rates) and one of CPU time; the
    contenders take turns, rotating who goes first each round; the warm-up
    rounds are dropped."""
    walls = {
        row: Result(TITLES[row], "items/s" if row == "stream" else "us", row == "stream")
        for row in rows
    }
    cpus = {
        row: Result(f"{TITLES[row]} (cpu)", "cpu us/item" if row == "stream" else "cpu us", False)
        for row in rows
    }
    for row in rows:
        walls[row].samples = {name: [] for name in contenders(row, among)}
        cpus[row].samples = {name: [] for name in contenders(row, among)}
    for round_ in range(config.warmup + config.repeat):
        started = time.perf_counter()
        for row in rows:
            names = contenders(row, among)
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                sample = SAMPLERS[name](row, config)
                if round_ >= config.warmup:
                    walls[row].samples[name].append(sample.value)
                    cpus[row].samples[name].append(sample.cpu)
        what = "warm-up" if round_ < config.warmup else f"round {round_ - config.warmup + 1}"
        progress(f"  {what}: {time.perf_counter() - started:.1f}s")
    return list(walls.values()), list(cpus.values())


# -- reporting


def render_table(results: Sequence[Result]) -> str:
    header = [
        "", "unit", "better", *(LABELS[name] for name in IMPLEMENTATIONS),
        "agw/rpyc", "sync/rpyc", "agw/Pyro5", "sync/Pyro5",
    ]  # fmt: skip
    rows = [
        [
            result.workload,
            result.unit,
            "higher" if result.higher_is_better else "lower",
            *(format_cell(result, name) for name in IMPLEMENTATIONS),
            format_ratio(result.ratio("rpyc")),
            format_ratio(result.ratio("rpyc", mine_name="sync")),
            format_ratio(result.ratio("pyro5")),
            format_ratio(result.ratio("pyro5", mine_name="sync")),
        ]
        for result in results
    ]
    return format_rows(header, rows)


def render_targets(results: Sequence[Result]) -> list[str]:
    by_title = {result.workload: result for result in results}
    lines = ["targets (asyncgw's async API against rpyc, medians as printed):"]
    for row, bound in TARGETS.items():
        if TITLES[row] not in by_title:
            continue
        result = by_title[TITLES[row]]
        ratio, sync_ratio = result.ratio("rpyc"), result.ratio("rpyc", mine_name="sync")
        parts = []
        if ratio is not None:
            verdict = "met" if ratio <= bound else "MISSED"
            parts.append(f"{ratio:.2f} of rpyc's (target <= {bound}): {verdict}")
        if sync_ratio is not None:
            sync_verdict = "met" if sync_ratio <= bound else "missed"
            parts.append(f"asyncgw.sync {sync_ratio:.2f} ({sync_verdict})")
        if parts:
            lines.append(f"  {TITLES[row]}: {'; '.join(parts)}")
    return lines


def environment_info() -> dict[str, Any]:
    return {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "asyncgw": asyncgw.__version__,
        "rpyc": rpyc.__version__,
        "Pyro5": Pyro5.__version__,
        "uvloop": _version("uvloop"),
    }


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def report(
    env: dict[str, Any], config: Config, results: Sequence[Result], cpu: Sequence[Result]
) -> str:
    facade_loop = f"uvloop {env['uvloop']}" if env["uvloop"] else "asyncio"
    lines = [
        f"asyncgw {env['asyncgw']} remote objects vs rpyc {env['rpyc']} (classic, "
        f"connect_subproc) and Pyro5 {env['Pyro5']} (127.0.0.1 TCP); {env['date']}",
        f"Python {env['python']}, {env['platform']}, {env['cpus']} cpus; load average "
        f"(1 min) {env['load_before']:.2f} before, {env['load_after']:.2f} after; "
        f"{env['seconds']:.0f}s",
        f"a fresh child process per sample; {config.calls:,} operations per sample after "
        f"{config.warm} untimed; stream: {config.stream_items:,} items (asyncgw) or "
        f"{config.stream_items_peers:,} (item by item: rpyc, Pyro5)",
        f"median of {config.repeat} rounds after {config.warmup} warm-up, taking turns; "
        "±: half the min-max range",
        "",
        render_table(results),
        "",
        *render_targets(results),
        "",
        "us: microseconds per operation; ratios are of the medians (for items/s, above 1 "
        "means asyncgw is faster).",
        "method call: rpyc's c.add is a round trip of its own before the call's (2 in all); "
        "method held: add = c.add once.",
        f"chain: {', '.join(f'{LABELS[n]} {CHAIN_CODE[n]}' for n in IMPLEMENTATIONS)}; "
        "rpyc does a round trip per attribute.",
        "  * Pyro5 passes objects by value: no attribute chain; get_abc() is a method that "
        "returns a.b.c.",
        "stream: asyncgw fetches batches of 1000, one ahead; rpyc and Pyro5 a round trip per item.",
        "echo: asyncgw channel send+receive against a remote echo loop; rpyc conn.ping(i); "
        "Pyro5 has none.",
        f"asyncgw runs under asyncio.run; asyncgw.sync's loop thread on {facade_loop}.",
        "",
        "CPU microseconds per operation (per item for the stream), both sides: every thread "
        "of this process and the contender's child processes, medians:",
        render_table(cpu),
    ]
    return "\n".join(lines)


# -- profiling (--profile)


def print_cprofile(profiler: cProfile.Profile, title: str) -> None:
    print(f"\n-- cProfile of the local side: {title}, top 20 by own time")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.strip_dirs().sort_stats("tottime").print_stats(20)


async def asyncgw_profile(n: int) -> dict[str, Stopwatch]:
    """The async API's call and echo: timed, then each run again under
    cProfile (printed)."""
    async with asyncgw.Group(exit_timeout=EXIT_TIMEOUT) as group:
        gateway = await group.makegateway("popen")
        c = await gateway.create(Counter)
        channel = gateway.remote_exec(ECHO_LOOP)

        async def calls() -> None:
            for _ in range(n):
                await c.add(1)

        async def echoes() -> None:
            for i in range(n):
                await channel.send(i)
                await channel.receive()

        watches: dict[str, Stopwatch] = {}
        for label, work in (("call", calls), ("echo", echoes)):
            await work()  # untimed
            with Stopwatch() as watches[f"asyncgw {label}"]:
                await work()
            profiler = cProfile.Profile()
            profiler.enable()
            await work()
            profiler.disable()
            print_cprofile(profiler, f"{n} asyncgw {label}s")
        channel.close()
        return watches


def time_blocking(operation: Callable[[int], object], n: int) -> Stopwatch:
    for i in range(n):  # untimed
        operation(i)
    with Stopwatch() as watch:
        for i in range(n):
            operation(i)
    return watch


def profile(n: int, progress: Callable[[str], None]) -> None:
    """Where a call's time goes, on each side (printed, not recorded)."""
    progress("profiling...")
    print("\n== where the time goes (printed only)")
    watches = asyncio.run(asyncgw_profile(n))
    with asyncgw.sync.Group(["popen"]) as group:
        for row in ("call", "echo"):
            ops = SyncOps(group[0], row)
            watches[f"asyncgw.sync {row}"] = time_blocking(getattr(ops, row), n)
            if row == "echo":
                ops.channel.close()
    with rpyc_connection() as conn:
        rpyc_ops = RpycOps(conn)
        for row, label in (("call", "call"), ("held", "held call"), ("echo", "ping")):
            watches[f"rpyc {label}"] = time_blocking(getattr(rpyc_ops, row), n)
    with pyro5_proxy() as proxy:
        watches["Pyro5 call"] = time_blocking(Pyro5Ops(proxy).call, n)
    header = ["per operation (us)", "wall", "CPU here", "CPU children", "wall - CPU"]
    rows = [
        [
            label,
            *(
                format_value(seconds / n * 1e6)
                for seconds in (
                    watch.wall,
                    watch.local,
                    watch.children,
                    watch.wall - watch.local - watch.children,
                )
            ),
        ]
        for label, watch in watches.items()
    ]
    print(
        f"\n-- {n:,} operations each after {n:,} untimed, one process each; CPU here: "
        "every thread of this process; children: the worker or server"
    )
    print(format_rows(header, rows))


# -- running


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, help="measured rounds (default 7, --quick 1)")
    parser.add_argument(
        "--quick", action="store_true", help="1 round, fewer operations (under a minute)"
    )
    parser.add_argument(
        "--calls", type=int, help="timed operations per sample (default 3000, --quick 500)"
    )
    parser.add_argument("--warm", type=int, default=200, help="untimed operations per sample")
    parser.add_argument("--profile", action="store_true", help="then profile a call, printed")
    parser.add_argument(
        "--rows", default=",".join(ROWS), help=f"rows to run, comma-separated (of {','.join(ROWS)})"
    )
    parser.add_argument(
        "--contenders",
        default=",".join(IMPLEMENTATIONS),
        help=f"contenders, comma-separated (of {','.join(IMPLEMENTATIONS)})",
    )
    parser.add_argument(
        "--json", metavar="PATH", help="results file (default: docs/_results/objects.json)"
    )
    args = parser.parse_args(argv)
    args.rows = [row for row in ROWS if row in args.rows.split(",")]
    args.contenders = [name for name in IMPLEMENTATIONS if name in args.contenders.split(",")]
    if args.repeat is None:
        args.repeat = 1 if args.quick else 7
    if args.calls is None:
        args.calls = 500 if args.quick else 3000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = Config(
        repeat=args.repeat,
        warmup=1,
        warm=args.warm,
        calls=args.calls,
        stream_items=20_000 if args.quick else 100_000,
        stream_items_peers=2_000 if args.quick else 10_000,
    )
    env = environment_info()
    recorder = Recorder("objects", peers=["rpyc", "Pyro5", "uvloop"], quick=args.quick)
    recorder.notes.append(
        "rpyc's method call c.add(1) is two round trips (the lookup of c.add, then the call); "
        "asyncgw's is one. The 'method held' row is one round trip for both."
    )

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    progress(f"benchmarking remote objects ({env['cpus']} cpus)...")
    started = time.perf_counter()
    try:
        env["load_before"] = os.getloadavg()[0]
        results, cpu = measure(config, progress, args.rows, args.contenders)
        env["load_after"] = os.getloadavg()[0]
        env["seconds"] = time.perf_counter() - started
        text = report(env, config, results, cpu)
        print(text)
        recorder.write(
            [*results, *cpu], RESULT_TARGETS, config=config.__dict__, path=args.json,
            extra={"cpu_rows": [r.workload for r in cpu]},
        )  # fmt: skip
        if args.profile:
            profile(5000, progress)
    except WrongAnswer as failure:
        progress(f"FAILED: {failure}")
        return 1
    finally:
        leftovers = reap_children()
        if leftovers:
            progress(f"WARNING: killed leftover child processes: {', '.join(leftovers)}")
    return 1 if leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
