"""asyncgw beside execnet and a raw lower bound, measured in one run.

Usage::

    python benchmarks/bench_core.py [--quick | --full] [--uvloop] [--json out.json]

Method (details in ``benchmarks/README.md``): every workload runs for the
asyncgw async API, for execnet, and for a raw lower bound where one makes
sense. The implementations take turns sample by sample (rotating which goes
first), so that drift on the machine affects all alike; the first round is
a discarded warm-up and the median of the rest is reported. Steady-state
workloads reuse one gateway per implementation for all their samples, so
interpreter start-up is not part of them.

The blocking implementations (execnet, raw pipes) run directly on the event
loop's thread: nothing of asyncgw is in flight while they are measured.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import IO, Any

import execnet
from harness import (
    EXIT_TIMEOUT,
    Recorder,
    Result,
    Target,
    blocking,
    format_cell,
    format_ratio,
    format_rows,
    measure,
    reap_children,
    render_targets,
)

import asyncgw
import asyncgw.sync
from asyncgw.transports.popen import PIPE_SIZE

MIB = 1 << 20
CHUNK = bytes(MIB)
#: "sync" is asyncgw through its blocking facade, asyncgw.sync.
IMPLEMENTATIONS = ("asyncgw", "sync", "execnet", "bound")

# -- remote code (the same source for asyncgw and execnet)

ECHO_ONCE = "channel.send(channel.receive())"

ECHO_LOOP = """\
for item in channel:
    channel.send(item)
"""

# None ends a batch: the count goes back and the next batch starts.
COUNT_ITEMS = """\
count = 0
for item in channel:
    if item is None:
        channel.send(count)
        count = 0
    else:
        count += 1
"""

COUNT_BYTES = """\
count = 0
for item in channel:
    if item is None:
        channel.send(count)
        count = 0
    else:
        count += len(item)
"""

# -- raw lower-bound children: they write b"r" once ready, so their
# start-up stays out of the measurement.

RAW_ECHO = """\
import os
os.write(1, b"r")
while True:
    data = os.read(0, 8)
    if not data:
        break
    os.write(1, data)
"""

RAW_SINK = """\
import os
os.write(1, b"r")
buffer = bytearray(1 << 20)
count = 0
while True:
    received = os.readv(0, [buffer])
    if not received:
        break
    count += received
os.write(1, str(count).encode())
"""


@dataclass(frozen=True)
class Config:
    """Sizes and repetitions of one run."""

    start_reps: int
    steady_reps: int
    warmup: int
    group_sizes: tuple[int, ...]
    roundtrips: int
    ints: int
    mebibytes: int

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        if args.quick:
            return cls(
                start_reps=3,
                steady_reps=3,
                warmup=1,
                group_sizes=(8,),
                roundtrips=2_000,
                ints=20_000,
                mebibytes=64,
            )
        return cls(
            start_reps=5,
            # --full: more steady samples, since a median of 5 round-trip
            # samples moved by a third between runs on a noisy 2-core VM.
            steady_reps=11 if args.full else 5,
            warmup=1,
            group_sizes=(8, 32) if args.full else (8,),
            roundtrips=5_000,
            ints=200_000,
            mebibytes=256,
        )


# -- resources held across the samples of a steady-state workload


@asynccontextmanager
async def asyncgw_channel(source: str) -> AsyncIterator[asyncgw.Channel]:
    async with asyncgw.Group(exit_timeout=EXIT_TIMEOUT) as group:
        gateway = await group.makegateway("popen")
        channel = gateway.remote_exec(source)
        try:
            yield channel
        finally:
            channel.close()


@contextmanager
def execnet_channel(source: str) -> Iterator[execnet.Channel]:
    group = execnet.Group()
    try:
        channel = group.makegateway("popen").remote_exec(source)
        try:
            yield channel
        finally:
            channel.close()
    finally:
        group.terminate(timeout=EXIT_TIMEOUT)


@contextmanager
def sync_channel(source: str) -> Iterator[asyncgw.sync.Channel]:
    with asyncgw.sync.Group() as group:
        channel = group.makegateway("popen").remote_exec(source)
        try:
            yield channel
        finally:
            channel.close()


@dataclass(frozen=True)
class RawChild:
    """A child python talking over bare pipes."""

    stdin: IO[bytes]
    stdout: IO[bytes]

    @property
    def to_child(self) -> int:
        return self.stdin.fileno()

    @property
    def from_child(self) -> int:
        return self.stdout.fileno()


@contextmanager
def raw_child(source: str) -> Iterator[RawChild]:
    """A child running ``source``, once it is ready."""
    child = subprocess.Popen(
        [sys.executable, "-c", source], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
    )
    assert child.stdin is not None and child.stdout is not None
    # The same pipe capacity asyncgw's popen transport asks for, so that the
    # bound is a bound (Linux; elsewhere the default stays).
    for pipe in (child.stdin, child.stdout):
        with suppress(OSError, AttributeError):
            fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    try:
        if os.read(child.stdout.fileno(), 1) != b"r":
            raise RuntimeError("raw child did not start")
        yield RawChild(child.stdin, child.stdout)
    finally:
        child.stdin.close()
        try:
            child.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        child.stdout.close()


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# -- 1 and 2: start, one round trip each, terminate


async def asyncgw_start(count: int, spec: str = "popen") -> float:
    started = time.perf_counter()
    async with asyncgw.Group(exit_timeout=EXIT_TIMEOUT) as group:
        if count == 1:
            await group.makegateway(spec)
        else:
            await group.makegateways([spec] * count)
        channels = group.remote_exec(ECHO_ONCE)
        await channels.send_each(1)
        if await channels.receive_each() != [1] * count:
            raise AssertionError("asyncgw: wrong echo")
        await group.terminate(EXIT_TIMEOUT)
    return time.perf_counter() - started


def execnet_start(count: int, spec: str = "popen") -> float:
    started = time.perf_counter()
    group = execnet.Group()
    try:
        for _ in range(count):
            group.makegateway(spec)
        channels = group.remote_exec(ECHO_ONCE)
        for channel in channels:
            channel.send(1)
        if channels.receive_each() != [1] * count:
            raise AssertionError("execnet: wrong echo")
    finally:
        group.terminate(timeout=EXIT_TIMEOUT)
    return time.perf_counter() - started


def raw_start(count: int) -> float:
    started = time.perf_counter()
    children = [
        subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.DEVNULL)
        for _ in range(count)
    ]
    for child in children:
        child.wait()
    return time.perf_counter() - started


async def bench_start(config: Config, count: int) -> Result:
    samples = await measure(
        config.warmup,
        config.start_reps,
        {
            "asyncgw": lambda: asyncgw_start(count),
            "execnet": blocking(lambda: execnet_start(count)),
            "bound": blocking(lambda: raw_start(count)),
        },
    )
    what = "1 popen gateway" if count == 1 else f"{count} popen gateways"
    return Result(
        f"{what}: start+rt+exit",
        "ms",
        higher_is_better=False,
        samples={name: [s * 1e3 for s in values] for name, values in samples.items()},
    )


# -- memory: what an idle gateway costs on each side


#: Gateways opened by one memory sample.
MEMORY_GATEWAYS = 8

#: Run in a fresh interpreter per sample (so earlier workloads' heap does not
#: hide the growth): opens MEMORY_GATEWAYS idle popen gateways with one
#: finished remote_exec each and prints, in MiB, the local RSS growth per
#: gateway (KiB) and the median RSS of the workers (MiB, their own processes).
MEMORY_CHILD = """\
import asyncio, json, statistics, sys
import psutil
which, count = sys.argv[1], int(sys.argv[2])
me = psutil.Process()
MIB = 1 << 20

def measure(pids, before):
    local = (me.memory_info().rss - before) / count / 1024
    remote = statistics.median(psutil.Process(pid).memory_info().rss / MIB for pid in pids)
    print(json.dumps([local, remote]))

if which == "execnet":
    import execnet
    group = execnet.Group()
    before = me.memory_info().rss
    gws = [group.makegateway("popen") for _ in range(count)]
    pids = [gw.remote_exec("import os; channel.send(os.getpid())").receive() for gw in gws]
    measure(pids, before)
    group.terminate(timeout=10)
else:
    import asyncgw

    async def main():
        async with asyncgw.Group() as group:
            before = me.memory_info().rss
            gws = await group.makegateways(["popen"] * count)
            for gw in gws:
                await gw.remote_exec("channel.send(1)").receive()
            measure([gw.remote_pid for gw in gws], before)

    asyncio.run(main())
"""


def memory_sample(which: str) -> tuple[float, float]:
    output = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, which, str(MEMORY_GATEWAYS)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    local, remote = json.loads(output)
    return local, remote


async def bench_memory(config: Config) -> list[Result]:
    local = Result(f"memory: local RSS per idle popen gateway ({MEMORY_GATEWAYS})", "KiB", False)
    remote = Result("memory: RSS of an idle popen worker", "MiB", higher_is_better=False)
    for name in ("asyncgw", "execnet"):
        local.samples[name], remote.samples[name] = [], []
    for round_ in range(config.warmup + config.steady_reps):
        for name in ("asyncgw", "execnet")[:: 1 if round_ % 2 else -1]:
            sample = await asyncio.to_thread(memory_sample, name)
            if round_ >= config.warmup:
                local.samples[name].append(sample[0])
                remote.samples[name].append(sample[1])
    return [local, remote]


# -- 3: round-trip latency


async def bench_roundtrip(config: Config) -> Result:
    n = config.roundtrips
    message = b"12345678"

    async with asyncgw_channel(ECHO_LOOP) as achannel:

        async def asyncgw_sample() -> float:
            started = time.perf_counter()
            for i in range(n):
                await achannel.send(i)
                await achannel.receive()
            return time.perf_counter() - started

        with execnet_channel(ECHO_LOOP) as echannel, sync_channel(ECHO_LOOP) as schannel:

            def execnet_sample() -> float:
                started = time.perf_counter()
                for i in range(n):
                    echannel.send(i)
                    echannel.receive()
                return time.perf_counter() - started

            def sync_sample() -> float:
                started = time.perf_counter()
                for i in range(n):
                    schannel.send(i)
                    schannel.receive()
                return time.perf_counter() - started

            def raw_sample() -> float:
                with raw_child(RAW_ECHO) as child:
                    to_child, from_child = child.to_child, child.from_child
                    started = time.perf_counter()
                    for _ in range(n):
                        os.write(to_child, message)
                        os.read(from_child, 8)
                    return time.perf_counter() - started

            samples = await measure(
                config.warmup,
                config.steady_reps,
                {
                    "asyncgw": asyncgw_sample,
                    "sync": blocking(sync_sample),
                    "execnet": blocking(execnet_sample),
                    "bound": blocking(raw_sample),
                },
            )
    return Result(
        "round trip, small int",
        "us/msg",
        higher_is_better=False,
        samples={name: [s / n * 1e6 for s in values] for name, values in samples.items()},
    )


# -- 4 and 5: one-way streams. The remote counts (items or bytes) until
# None, then sends the count back; the time includes that answer.


async def pour(channel: asyncgw.Channel, items: Iterable[object], expected: int) -> float:
    started = time.perf_counter()
    for item in items:
        await channel.send(item)
    await channel.send(None)
    count = await channel.receive()
    elapsed = time.perf_counter() - started
    if count != expected:
        raise AssertionError(f"asyncgw: {count} of {expected} arrived")
    return elapsed


def pour_blocking(
    name: str, channel: Any, items: Callable[[], Iterable[object]], expected: int
) -> Callable[[], float]:
    """A sample for a blocking channel (execnet's, or asyncgw.sync's)."""

    def sample() -> float:
        started = time.perf_counter()
        for item in items():
            channel.send(item)
        channel.send(None)
        count = channel.receive()
        elapsed = time.perf_counter() - started
        if count != expected:
            raise AssertionError(f"{name}: {count} of {expected} arrived")
        return elapsed

    return sample


async def bench_ints(config: Config) -> Result:
    n = config.ints

    async with asyncgw_channel(COUNT_ITEMS) as achannel:
        with execnet_channel(COUNT_ITEMS) as echannel, sync_channel(COUNT_ITEMS) as schannel:
            samples = await measure(
                config.warmup,
                config.steady_reps,
                {
                    "asyncgw": lambda: pour(achannel, range(n), n),
                    "sync": blocking(pour_blocking("sync", schannel, lambda: range(n), n)),
                    "execnet": blocking(pour_blocking("execnet", echannel, lambda: range(n), n)),
                },
            )
    return Result(
        f"one-way small ints, N={n:,}",
        "msg/s",
        higher_is_better=True,
        samples={name: [n / s for s in values] for name, values in samples.items()},
    )


# -- 5: one-way 1 MiB chunks


async def bench_bytes(config: Config) -> Result:
    chunks = config.mebibytes
    total = chunks * MIB

    async with asyncgw_channel(COUNT_BYTES) as achannel:
        with execnet_channel(COUNT_BYTES) as echannel:
            chunk_list = [CHUNK] * chunks

            def raw_sample() -> float:
                with raw_child(RAW_SINK) as child:
                    to_child = child.to_child
                    started = time.perf_counter()
                    for _ in range(chunks):
                        write_all(to_child, CHUNK)
                    child.stdin.close()  # EOF: the child reports its count
                    count = int(child.stdout.read())
                    elapsed = time.perf_counter() - started
                if count != total:
                    raise AssertionError(f"raw pipe: {count} of {total} bytes arrived")
                return elapsed

            samples = await measure(
                config.warmup,
                config.steady_reps,
                {
                    "asyncgw": lambda: pour(achannel, chunk_list, total),
                    "execnet": blocking(
                        pour_blocking("execnet", echannel, lambda: chunk_list, total)
                    ),
                    "bound": blocking(raw_sample),
                },
            )
    return Result(
        f"one-way 1 MiB bytes, {chunks} MiB",
        "MiB/s",
        higher_is_better=True,
        samples={name: [chunks / s for s in values] for name, values in samples.items()},
    )


# -- running and reporting


async def run_all(config: Config, progress: Callable[[str], None]) -> list[Result]:
    benches: list[tuple[str, Callable[[], Awaitable[Result]]]] = [
        (f"start {n}", partial(bench_start, config, n)) for n in (1, *config.group_sizes)
    ]
    benches += [
        ("round trip", partial(bench_roundtrip, config)),
        ("one-way ints", partial(bench_ints, config)),
        ("one-way bytes", partial(bench_bytes, config)),
    ]
    results = []
    for label, bench in benches:
        started = time.perf_counter()
        results.append(await bench())
        progress(f"  {label}: {time.perf_counter() - started:.1f}s")
    started = time.perf_counter()
    results += await bench_memory(config)
    progress(f"  memory: {time.perf_counter() - started:.1f}s")
    return results


def render_table(results: list[Result]) -> str:
    header = [
        "workload", "unit", "better", *IMPLEMENTATIONS,
        "agw/execnet", "sync/execnet", "agw/bound",
    ]  # fmt: skip
    rows = [
        [
            result.workload,
            result.unit,
            "higher" if result.higher_is_better else "lower",
            *(format_cell(result, name) for name in IMPLEMENTATIONS),
            format_ratio(result.ratio("execnet")),
            format_ratio(result.ratio("execnet", mine_name="sync")),
            format_ratio(result.ratio("bound")),
        ]
        for result in results
    ]
    return format_rows(header, rows)


def environment(args: argparse.Namespace, config: Config) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "asyncgw": asyncgw.__version__,
        "execnet": execnet.__version__,
        "loop": "uvloop" if args.uvloop else "asyncio",
        "malloc": {name: value for name, value in os.environ.items() if name.startswith("MALLOC_")},
        "config": config.__dict__,
    }


#: The issue's targets, asyncgw's median over the peer's (see docs/benchmarks.rst).
TARGETS = (
    Target("1 popen gateway", "1 popen gateway", "asyncgw", "execnet", 0.5),
    Target("1 popen gateway, against a bare start", "1 popen gateway", "asyncgw", "bound", 1.5),
    Target("8 popen gateways", "8 popen gateways", "asyncgw", "execnet", 0.35,
           note="execnet starts its gateways one at a time (it has no parallel start)"),
    Target("32 popen gateways", "32 popen gateways", "asyncgw", "execnet", 0.3,
           note="execnet starts its gateways one at a time (it has no parallel start)"),
    Target("round trip, async API", "round trip", "asyncgw", "execnet", 0.8),
    Target("round trip, async API, against a bare pipe echo", "round trip", "asyncgw", "bound",
           1.3),
    Target("round trip, asyncgw.sync", "round trip", "sync", "execnet", 0.7),
    Target("one-way small ints, async API", "one-way small ints", "asyncgw", "execnet", 3.0,
           at_most=False),
    Target("one-way small ints, asyncgw.sync", "one-way small ints", "sync", "execnet", 1.0,
           at_most=False),
    Target("1 MiB chunks one-way", "one-way 1 MiB", "asyncgw", "bound", 0.9, at_most=False),
    Target("local RSS per idle popen gateway", "memory: local RSS", "asyncgw", "execnet", 1.0),
    Target("worker RSS", "memory: RSS of an idle", "asyncgw", "execnet", 1.0),
)  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes (well under a minute)")
    size.add_argument("--full", action="store_true", help="also start 32 gateways at once")
    parser.add_argument("--uvloop", action="store_true", help="run asyncgw on uvloop")
    parser.add_argument(
        "--json", metavar="PATH", help="results file (default docs/_results/core.json)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = Config.from_args(args)
    env = environment(args, config)
    recorder = Recorder("core", peers=["execnet", "psutil"], quick=args.quick)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    progress(f"benchmarking ({env['loop']}, {env['cpus']} cpus)...")
    started = time.perf_counter()
    try:
        if args.uvloop:
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                results = runner.run(run_all(config, progress))
        else:
            results = asyncio.run(run_all(config, progress))
    finally:
        leftovers = reap_children()
        if leftovers:
            progress(f"WARNING: killed leftover child processes: {', '.join(leftovers)}")
    wall = time.perf_counter() - started

    print(
        f"asyncgw {env['asyncgw']} ({env['loop']}) vs execnet {env['execnet']}; "
        f"Python {env['python']}, {env['platform']}, {env['cpus']} cpus"
    )
    if env["malloc"]:
        print("malloc tuning: " + " ".join(f"{k}={v}" for k, v in env["malloc"].items()))
    print(
        f"median of {config.start_reps} (starts) / {config.steady_reps} (steady) samples "
        f"after {config.warmup} warm-up; ±: half the min-max range; total {wall:.0f}s"
    )
    print()
    print(render_table(results))
    print()
    print("bound: bare 'python -c pass' starts; blocking 8-byte pipe echo; raw 1 MiB pipe pour.")
    print("ratios are of the medians as printed (see 'better' for the direction).")
    recorder.notes.append(
        "execnet starts its gateways one at a time (makegateway in turn; it has no parallel "
        "start); asyncgw starts them together (makegateways)."
    )
    document = recorder.document(results, TARGETS, config=env)
    print()
    print("\n".join(render_targets(document)))
    recorder.write(results, TARGETS, config=env, path=args.json)
    return 1 if leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
