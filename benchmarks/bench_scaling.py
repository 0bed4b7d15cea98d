"""How time and memory grow with gateways and with channels, beside execnet.

Usage::

    python benchmarks/bench_scaling.py [--quick] [--json out.json] [--plot out.png]
        [--gateways 1,8,...] [--channels 1,100,...] [--output results.txt]

Every sample runs in a fresh interpreter (this script, with ``--point``),
so that one sample's heap does not hide the next one's growth. Inside it,
one cheap warm-up of the same workload at size 1 comes first and is
discarded (imports, first-use costs on both sides); then the measured run.
Memory is read with everything open and idle; the time spent reading it is
left out of the time.

- **gateways** (1, 8, 32, 128, 1000): start N popen gateways (asyncgw:
  ``makegateways``, in parallel; execnet: ``makegateway`` in turn, it has no
  parallel start), one round trip on each (all in flight at once), then
  terminate, which returns once every interpreter is gone. "up" is the
  start alone (until every gateway is up). Memory: the caller's RSS
  growth, and the RSS and PSS summed over every process below the caller
  (workers, and asyncgw's fork server). At 1000, ``asyncgw Sn1024`` does
  the same in an interpreter started with the soft ``RLIMIT_NOFILE`` at
  1024 (``ulimit -Sn 1024``, a common default), which asyncgw raises.
- **channels** (1, 100, 10 000) on one popen gateway, started before the
  clock starts: open M channels, send one value on each and receive every
  echo (all in flight at once: ``asyncio.gather`` in asyncgw; execnet sends
  all, then receives all), then end them all and wait until the remote side
  has. Ways of opening them:

  - ``exec``: one ``remote_exec`` per channel of a plain echo loop, the same
    source for both libraries, as a user porting execnet code writes it.
    Both run each piece of sync remote code on a thread of its own, so M
    channels are M remote threads. Ended by sending ``None``.
  - ``async`` (asyncgw only): the same with an ``async`` echo loop; every
    echo is a task on the worker's one event loop.
  - ``sent``: one ``remote_exec`` that receives M new channels
    (``newchannel()``) as values over its own channel and answers each with
    ``setcallback(ch.send)``: no code, thread or task per channel. Ended by
    closing each channel, then sending ``None`` to the serving code and
    waiting for it to finish (frames are handled in order, so the closes
    are done by then).

The samples take turns: in each round every point runs once for every
implementation, and which implementation goes first rotates. Every echo is
checked. A point that fails or exceeds its time limit is recorded as such
and not run again. After each sample, and at the end, no child process may
be left: leftovers are killed, reported, and make the exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import psutil
from harness import Recorder, Result

GATEWAYS = (1, 8, 32, 128, 1000)
CHANNELS = (1, 100, 10_000)
QUICK_GATEWAYS = (1, 8, 32)
QUICK_CHANNELS = (1, 100, 1_000)
REPS = 3

GATEWAY_IMPLS = ("asyncgw", "execnet")
#: asyncgw in an interpreter started with the soft descriptor limit at
#: SOFT_LIMIT, at the sizes of LIMITED_SIZES (where it matters).
LIMITED = "asyncgw Sn1024"
SOFT_LIMIT = 1024
LIMITED_SIZES = (1000,)
CHANNEL_IMPLS = ("asyncgw exec", "asyncgw async", "asyncgw sent", "execnet exec", "execnet sent")
#: What each implementation is compared with in the ratio column.
COUNTERPART = {
    "asyncgw": "execnet",
    LIMITED: "execnet",
    "asyncgw exec": "execnet exec",
    "asyncgw async": "execnet exec",
    "asyncgw sent": "execnet sent",
}

#: Seconds one sample (one fresh interpreter) may take before it is killed.
POINT_TIMEOUT = 300.0
#: Seconds any single wait inside a sample may take (receive, close, exit).
WAIT = 120.0
EXIT_TIMEOUT = 30.0
MIB = 1 << 20

# -- remote code (the same source for asyncgw and execnet where both run it)

ECHO_PID = "import os\nchannel.send((channel.receive(), os.getpid()))"

ECHO = """\
for item in channel:
    if item is None:
        break
    channel.send(item)
"""

ECHO_ASYNC = """\
async for item in channel:
    if item is None:
        break
    await channel.send(item)
"""

SERVE_SENT = """\
for served in channel:
    if served is None:
        break
    served.setcallback(served.send)
"""


# -- inside one sample's interpreter


class Stopwatch:
    """Wall time, minus the stretches spent in :meth:`paused`."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self._since = time.perf_counter()

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.elapsed += time.perf_counter() - self._since
        try:
            yield
        finally:
            self._since = time.perf_counter()

    def lap(self) -> float:
        """Seconds so far (pauses left out), without stopping."""
        return self.elapsed + time.perf_counter() - self._since

    def stop(self) -> float:
        self.elapsed += time.perf_counter() - self._since
        return self.elapsed


def rss() -> int:
    return psutil.Process().memory_info().rss


def snapshot(local_before: int) -> dict[str, float]:
    """Memory with everything open: the caller's growth since
    ``local_before``, and what every process below the caller holds."""
    me = psutil.Process()
    remote_rss = remote_pss = 0
    procs = threads = 0
    for child in me.children(recursive=True):
        with suppress(psutil.NoSuchProcess):
            info = child.memory_full_info()
            remote_rss += info.rss
            remote_pss += info.pss
            threads += child.num_threads()
            procs += 1
    return {
        "local_mib": (me.memory_info().rss - local_before) / MIB,
        "local_fds": me.num_fds(),
        "local_threads": me.num_threads(),
        "remote_rss_mib": remote_rss / MIB,
        "remote_pss_mib": remote_pss / MIB,
        "remote_procs": procs,
        "remote_threads": threads,
    }


def check(name: str, got: object, expected: object) -> None:
    if got != expected:
        raise AssertionError(f"{name}: wrong answer: {got!r:.200} != {expected!r:.200}")


async def asyncgw_gateways(
    count: int, memory: Callable[[], None] | None, up: list[float] | None = None
) -> float:
    import asyncgw

    watch = Stopwatch()
    async with asyncgw.Group(exit_timeout=EXIT_TIMEOUT) as group:
        gateways = await group.makegateways(["popen"] * count)
        if up is not None:
            up.append(watch.lap())

        async def roundtrip(gateway: asyncgw.Gateway, value: int) -> object:
            channel = gateway.remote_exec(ECHO_PID)
            await channel.send(value)
            return await channel.receive(WAIT)

        answers = await asyncio.gather(*(roundtrip(gw, i) for i, gw in enumerate(gateways)))
        check("asyncgw", answers, [(i, gw.remote_pid) for i, gw in enumerate(gateways)])
        if memory is not None:
            with watch.paused():
                memory()
        await group.terminate(EXIT_TIMEOUT)
    return watch.stop()


def execnet_gateways(
    count: int, memory: Callable[[], None] | None, up: list[float] | None = None
) -> float:
    import execnet

    watch = Stopwatch()
    group = execnet.Group()
    try:
        gateways = [group.makegateway("popen") for _ in range(count)]
        if up is not None:
            up.append(watch.lap())
        channels = [gw.remote_exec(ECHO_PID) for gw in gateways]
        for index, channel in enumerate(channels):
            channel.send(index)
        answers = [channel.receive(WAIT) for channel in channels]
        check("execnet", [index for index, _ in answers], list(range(count)))
        if memory is not None:
            with watch.paused():
                memory()
    finally:
        group.terminate(timeout=EXIT_TIMEOUT)
    return watch.stop()


async def asyncgw_channels(
    gateway: Any, how: str, count: int, memory: Callable[[], None] | None
) -> float:
    import asyncgw

    watch = Stopwatch()
    if how == "sent":
        control = gateway.remote_exec(SERVE_SENT)
        channels = [gateway.newchannel() for _ in range(count)]
        for channel in channels:
            await control.send(channel)
    else:
        source = ECHO_ASYNC if how == "async" else ECHO
        channels = [gateway.remote_exec(source) for _ in range(count)]

    async def echo(channel: asyncgw.Channel, value: int) -> object:
        await channel.send(value)
        return await channel.receive(WAIT)

    answers = await asyncio.gather(*(echo(ch, i) for i, ch in enumerate(channels)))
    check(f"asyncgw {how}", answers, list(range(count)))
    if memory is not None:
        with watch.paused():
            memory()
    if how == "sent":
        for channel in channels:
            channel.close()
        await control.send(None)
        await control.waitclose(WAIT)
    else:
        await asyncio.gather(*(channel.send(None) for channel in channels))
        await asyncio.gather(*(channel.waitclose(WAIT) for channel in channels))
    return watch.stop()


def execnet_channels(
    gateway: Any, how: str, count: int, memory: Callable[[], None] | None
) -> float:
    watch = Stopwatch()
    if how == "sent":
        control = gateway.remote_exec(SERVE_SENT)
        channels = [gateway.newchannel() for _ in range(count)]
        for channel in channels:
            control.send(channel)
    else:
        channels = [gateway.remote_exec(ECHO) for _ in range(count)]
    for index, channel in enumerate(channels):
        channel.send(index)
    check(f"execnet {how}", [channel.receive(WAIT) for channel in channels], list(range(count)))
    if memory is not None:
        with watch.paused():
            memory()
    if how == "sent":
        for channel in channels:
            channel.close()
        control.send(None)
        control.waitclose(WAIT)
    else:
        for channel in channels:
            channel.send(None)
        for channel in channels:
            channel.waitclose(WAIT)
    return watch.stop()


def run_point(series: str, impl: str, size: int) -> dict[str, float]:
    """One sample (warm-up first) in this interpreter: seconds and memory."""
    library, _, how = impl.partition(" ")
    found: dict[str, float] = {}

    def memory_from(before: int) -> Callable[[], None]:
        return lambda: found.update(snapshot(before))

    up: list[float] = []
    if series == "gateways" and library == "asyncgw":

        async def gateways() -> float:
            await asyncgw_gateways(1, None)
            return await asyncgw_gateways(size, memory_from(rss()), up)

        seconds = asyncio.run(gateways())
    elif series == "gateways":
        execnet_gateways(1, None)
        seconds = execnet_gateways(size, memory_from(rss()), up)
    elif library == "asyncgw":
        import asyncgw

        async def channels() -> float:
            async with asyncgw.Group(exit_timeout=EXIT_TIMEOUT) as group:
                gateway = await group.makegateway("popen")
                await asyncgw_channels(gateway, how, 1, None)
                found.update(remote_before_mib=snapshot(0)["remote_rss_mib"])
                seconds = await asyncgw_channels(gateway, how, size, memory_from(rss()))
                await group.terminate(EXIT_TIMEOUT)
            return seconds

        seconds = asyncio.run(channels())
    else:
        import execnet

        group = execnet.Group()
        try:
            gateway = group.makegateway("popen")
            execnet_channels(gateway, how, 1, None)
            found.update(remote_before_mib=snapshot(0)["remote_rss_mib"])
            seconds = execnet_channels(gateway, how, size, memory_from(rss()))
        finally:
            group.terminate(timeout=EXIT_TIMEOUT)
    left = psutil.Process().children(recursive=True)
    if up:
        found.update(up_seconds=up[0])
    found.update(soft_limit=resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    return {"seconds": seconds, **found, "left_in_sample": len(left)}


# -- the driver


@dataclass
class Point:
    """All samples of one implementation at one size of one series."""

    series: str
    size: int
    impl: str
    samples: list[dict[str, float]] = field(default_factory=list)
    failure: str | None = None

    def median(self, key: str) -> float | None:
        values = [sample[key] for sample in self.samples if key in sample]
        return statistics.median(values) if values else None

    def spread(self, key: str) -> float | None:
        """Half the min-max range, relative to the median."""
        values = [sample[key] for sample in self.samples if key in sample]
        middle = statistics.median(values) if values else 0
        return (max(values) - min(values)) / 2 / middle if middle else None


def become_subreaper() -> None:
    """Make orphans of our children ours (Linux), so that a worker whose
    parent died still shows up in the leftover check."""
    if sys.platform == "linux":
        pr_set_child_subreaper = 36
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def sweep() -> list[str]:
    """Reap finished orphans, then kill and list any child process left."""
    with suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    leftovers = psutil.Process().children(recursive=True)
    names = []
    for child in leftovers:
        with suppress(psutil.NoSuchProcess):
            names.append(f"{child.pid} {' '.join(' '.join(child.cmdline()).split())[:60]}")
            child.kill()
    psutil.wait_procs(leftovers, timeout=EXIT_TIMEOUT)
    with suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    return names


def lower_soft_limit() -> None:
    """In a sample's child, before it runs: the soft limit at SOFT_LIMIT."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT_LIMIT, hard))


def sample(point: Point, timeout: float) -> tuple[dict[str, float] | None, str | None]:
    """Run one sample in a fresh interpreter: (result, None) or (None, why)."""
    argv = [sys.executable, __file__, "--point", point.series, point.impl, str(point.size)]
    child = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lower_soft_limit if point.impl == LIMITED else None,
    )
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with suppress(psutil.NoSuchProcess):
            for process in psutil.Process(child.pid).children(recursive=True):
                process.kill()
        child.kill()
        child.communicate()
        return None, f"over {timeout:.0f}s, killed"
    if child.returncode != 0:
        last = (err.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
        return None, f"failed: {last[:160]}"
    return json.loads(out), None


def run(sizes: dict[str, tuple[int, ...]], reps: int, progress: Callable[[str], None]) -> Any:
    points = [
        Point(series, size, impl)
        for series, impls in (("gateways", GATEWAY_IMPLS), ("channels", CHANNEL_IMPLS))
        for size in sizes[series]
        for impl in impls + ((LIMITED,) if series == "gateways" and size in LIMITED_SIZES else ())
    ]
    leftovers: list[str] = []
    for round_ in range(reps):
        progress(f"round {round_ + 1} of {reps}")
        for series in ("gateways", "channels"):
            for size in sizes[series]:
                group = [p for p in points if p.series == series and p.size == size]
                shift = round_ % len(group)
                for point in group[shift:] + group[:shift]:
                    if point.failure:
                        continue
                    result, why = sample(point, POINT_TIMEOUT)
                    left = sweep()
                    if left:
                        leftovers += left
                        why = why or f"left {len(left)} child processes"
                    if result is None or why:
                        point.failure = why
                        progress(f"  {series}={size:<6} {point.impl:14} {why}")
                        continue
                    point.samples.append(result)
                    progress(
                        f"  {series}={size:<6} {point.impl:14} {result['seconds'] * 1e3:9.1f} ms"
                        f"  local {result['local_mib']:+7.1f} MiB"
                        f"  remote {result['remote_rss_mib']:8.1f} MiB"
                    )
    return points, leftovers


# -- reporting


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if round(value, digits) == 0:
        value = 0.0  # no "-0.0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def render(points: list[Point]) -> str:
    by_key = {(p.series, p.size, p.impl): p for p in points}
    header = [
        "series", "n", "implementation", "ms", "±", "vs execnet", "up ms", "up vs",
        "local MiB", "remote RSS MiB", "remote PSS MiB", "remote thr", "local fds",
    ]  # fmt: skip
    rows = []
    for point in points:
        ms = point.median("seconds")
        spread = point.spread("seconds")
        other = by_key.get((point.series, point.size, COUNTERPART.get(point.impl, "")))
        theirs = other.median("seconds") if other else None
        up = point.median("up_seconds")
        their_up = other.median("up_seconds") if other else None
        if point.failure and not point.samples:
            rows.append([point.series, str(point.size), point.impl, point.failure])
            continue
        rows.append(
            [
                point.series,
                str(point.size),
                point.impl,
                fmt(None if ms is None else ms * 1e3),
                "-" if spread is None else f"{spread * 100:.0f}%",
                "-" if ms is None or not theirs else f"{ms / theirs:.2f}",
                fmt(None if up is None else up * 1e3),
                "-" if up is None or not their_up else f"{up / their_up:.2f}",
                fmt(point.median("local_mib"), 2),
                fmt(point.median("remote_rss_mib")),
                fmt(point.median("remote_pss_mib")),
                fmt(point.median("remote_threads"), 0),
                fmt(point.median("local_fds"), 0),
            ]
        )
    widths = [
        max(len(row[i]) for row in [header, *rows] if len(row) == len(header))
        for i in range(len(header))
    ]

    def line(cells: list[str]) -> str:
        if len(cells) < len(header):  # a failure: its reason runs across
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False))
        left = [c.ljust(w) for c, w in zip(cells[:3], widths[:3], strict=True)]
        right = [c.rjust(w) for c, w in zip(cells[3:], widths[3:], strict=True)]
        return "  ".join(left + right).rstrip()

    lines = [line(header), "-" * len(line(header))]
    previous = None
    for row in rows:
        if previous is not None and row[:2] != previous[:2]:
            lines.append("")
        lines.append(line(row))
        previous = row
    return "\n".join(lines)


STYLES = {
    "asyncgw": ("tab:blue", "o"),
    "execnet": ("tab:orange", "s"),
    "asyncgw exec": ("tab:blue", "o"),
    "asyncgw async": ("tab:green", "^"),
    "asyncgw sent": ("tab:purple", "D"),
    "execnet exec": ("tab:orange", "s"),
    "execnet sent": ("tab:red", "v"),
}


def plot(points: list[Point], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    # Colours name the implementation (legend on the left); line styles the
    # measure (legend on the right). PSS only for gateways, where forked
    # workers share most of their pages and RSS counts them once each.
    memory_lines = {
        "gateways": [("remote_rss_mib", "-"), ("remote_pss_mib", "--"), ("local_mib", ":")],
        "channels": [("remote_rss_mib", "-"), ("local_mib", ":")],
    }
    names = {
        "remote_rss_mib": "workers' RSS, summed",
        "remote_pss_mib": "workers' PSS, summed",
        "local_mib": "caller's RSS growth",
    }
    figure, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    for row, (series, impls, xlabel) in enumerate(
        (
            ("gateways", GATEWAY_IMPLS, "popen gateways"),
            ("channels", CHANNEL_IMPLS, "concurrent channels on one gateway"),
        )
    ):
        time_axis, memory_axis = axes[row]
        for impl in impls:
            color, marker = STYLES[impl]
            mine = [p for p in points if p.series == series and p.impl == impl and p.samples]
            xs = [p.size for p in mine]
            ms = [[s["seconds"] * 1e3 for s in p.samples] for p in mine]
            middle = [statistics.median(values) for values in ms]
            errors = [
                [m - min(v) for m, v in zip(middle, ms, strict=True)],
                [max(v) - m for m, v in zip(middle, ms, strict=True)],
            ]
            time_axis.errorbar(
                xs, middle, yerr=errors, color=color, marker=marker, capsize=3, label=impl
            )
            for key, style in memory_lines[series]:
                pairs = [(p.size, p.median(key)) for p in mine]
                shown = [(x, y) for x, y in pairs if y is not None and y > 0]
                if shown:
                    memory_axis.plot(
                        *zip(*shown, strict=True), linestyle=style, color=color, marker=marker
                    )
        time_axis.set_ylabel(
            "start + one round trip each + terminate (ms)"
            if series == "gateways"
            else "open + one echo each + end (ms)"
        )
        memory_axis.set_ylabel("MiB (RSS; growth ≤ 0 not shown)")
        for axis in (time_axis, memory_axis):
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_xlabel(xlabel)
            axis.grid(True, which="both", alpha=0.3)
        time_axis.legend(fontsize=8)
        memory_axis.legend(
            [Line2D([], [], color="gray", linestyle=style) for _, style in memory_lines[series]],
            [names[key] for key, _ in memory_lines[series]],
            fontsize=8,
            title="colours as on the left",
            title_fontsize=8,
        )
    axes[0][0].set_title("time vs gateways")
    axes[0][1].set_title("memory vs gateways (all open and idle)")
    axes[1][0].set_title("time vs channels (one gateway)")
    axes[1][1].set_title("memory vs channels (all open)")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


#: The metrics a point's samples carry that the results file keeps as rows.
METRICS = (
    ("seconds", "start+rt+exit", "ms", 1e3),
    ("up_seconds", "start alone", "ms", 1e3),
    ("local_mib", "caller's RSS growth", "MiB", 1.0),
    ("remote_rss_mib", "workers' RSS, summed", "MiB", 1.0),
    ("remote_pss_mib", "workers' PSS, summed", "MiB", 1.0),
)


def as_results(points: list[Point]) -> list[Result]:
    """The points as rows: one per series, size and metric, a contender per
    implementation (``"<size> gateways: <metric>"``, ``"<size> channels: ..."``)."""
    rows: dict[str, Result] = {}
    for point in points:
        for key, title, unit, scale in METRICS:
            if point.series == "channels" and key == "seconds":
                title = "open+echo+end"
            name = f"{point.size} {point.series}: {title}"
            for sample in point.samples:
                if key in sample:
                    row = rows.setdefault(name, Result(name, unit, higher_is_better=False))
                    row.add(point.impl, sample[key] * scale)
    return list(rows.values())


def environment(sizes: dict[str, tuple[int, ...]], reps: int) -> dict[str, Any]:
    import execnet

    import asyncgw

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "asyncgw": asyncgw.__version__,
        "execnet": execnet.__version__,
        "nice": os.nice(0),
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "sizes": sizes,
        "reps": reps,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="up to 32 gateways, 1000 channels")
    parser.add_argument(
        "--json", metavar="PATH", help="results file (default: docs/_results/scaling.json)"
    )
    parser.add_argument("--plot", metavar="PATH", help="also write the 2x2 plot as PNG")
    parser.add_argument("--gateways", metavar="N,...", help="gateway counts to run (default: all)")
    parser.add_argument("--channels", metavar="M,...", help="channel counts ('' for none)")
    parser.add_argument("--output", metavar="PATH", help="also write the table to PATH")
    parser.add_argument("--point", nargs=3, metavar=("SERIES", "IMPL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.point:
        series, impl, size = args.point
        print(json.dumps(run_point(series, impl, int(size))))
        return 0

    become_subreaper()
    sizes = {
        "gateways": QUICK_GATEWAYS if args.quick else GATEWAYS,
        "channels": QUICK_CHANNELS if args.quick else CHANNELS,
    }
    for series in ("gateways", "channels"):
        chosen = getattr(args, series)
        if chosen is not None:
            sizes[series] = tuple(int(n) for n in chosen.split(",") if n.strip())
    env = environment(sizes, REPS)
    recorder = Recorder("scaling", peers=["execnet"], quick=args.quick)
    if sizes["gateways"] != GATEWAYS or sizes["channels"] != CHANNELS:
        recorder.reduced = f"sizes {sizes} instead of {GATEWAYS} gateways, {CHANNELS} channels"
    recorder.notes.append(
        "execnet starts its gateways one at a time (makegateway in turn; it has no parallel "
        "start); asyncgw starts them together (makegateways)."
    )

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    try:
        points, leftovers = run(sizes, REPS, progress)
    finally:
        final = sweep()
    leftovers += final
    wall = time.perf_counter() - started

    title = (
        f"asyncgw {env['asyncgw']} vs execnet {env['execnet']}; Python {env['python']}, "
        f"{env['cpus']} cpus; median of {REPS} fresh runs per point"
    )
    text = "\n".join(
        [
            title,
            f"{env['platform']}; nice {env['nice']}; open files limit {env['open_files_limit']}",
            f"total {wall:.0f}s",
            "",
            render(points),
            "",
            "ms: median; ±: half the min-max range; vs execnet: median ms over execnet's",
            "(async is compared with execnet exec). up ms: the start alone (until every",
            f"gateway is up), up vs: its ratio. {LIMITED}: asyncgw started with the soft",
            f"RLIMIT_NOFILE at {SOFT_LIMIT} (it raises it). local MiB: the caller's RSS growth;",
            "remote RSS/PSS: summed over every process below the caller (asyncgw's fork",
            "server included), with everything open; remote thr: their threads.",
        ]
    )
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    failures = {f"{p.series}={p.size} {p.impl}": p.failure for p in points if p.failure}
    recorder.write(
        as_results(points),
        config=env,
        path=args.json,
        extra={"failures": failures, "leftovers": leftovers},
    )
    if args.plot:
        plot(points, args.plot, title)
    if leftovers:
        progress(f"ERROR: child processes were left behind and killed: {leftovers}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
