"""How time and memory grow with gateways and with channels, beside execnet.

Usage::

    python benchmarks/bench_scaling.py [--quick] [--json out.json] [--plot out.png]

Two series, each point measured in a fresh interpreter (so one point's heap
does not hide the next one's growth), 3 samples per point (1 for execnet at
128 gateways and 10 000 channels, whose single sample takes long), median:

- **gateways**: start N popen gateways (asyncgw: ``makegateways``, in
  parallel; execnet: ``makegateway`` in turn, it has no parallel start), one
  round trip on each, terminate. Memory: the caller's RSS growth and the sum
  of the workers' RSS, both with all N gateways up and idle.
- **channels**: on one gateway, open M channels at once, send one value on
  each, receive every echo, close them all. asyncgw's remote code is
  ``async`` (all echoes are tasks on the worker's one event loop); execnet
  has no async remote code and runs each ``remote_exec`` on a thread of its
  own. Memory: the caller's RSS growth and the worker's RSS, with all M
  channels open.

Every echo is checked; at the end no child process may be left.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import psutil

GATEWAYS = (1, 8, 32, 128)
CHANNELS = (1, 100, 10_000)
QUICK_GATEWAYS = (1, 8, 32)
QUICK_CHANNELS = (1, 100, 1_000)
#: Seconds one point may take before it counts as failed.
POINT_TIMEOUT = 300

CHILD = r"""
import asyncio, json, sys, time
import psutil

impl, series, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
me = psutil.Process()
MIB = 1 << 20
ECHO = "channel.send(channel.receive())"
ASYNC_ECHO = "channel_value = await channel.receive()\nawait channel.send(channel_value)"


def report(started, before, workers):
    local = (me.memory_info().rss - before) / MIB
    remote = sum(psutil.Process(pid).memory_info().rss for pid in workers) / MIB
    return time.perf_counter() - started, local, remote


if impl == "execnet":
    import execnet

    started, before = time.perf_counter(), me.memory_info().rss
    group = execnet.Group()
    if series == "gateways":
        gws = [group.makegateway("popen") for _ in range(n)]
        channels = [gw.remote_exec("import os; " + ECHO) for gw in gws]
        for index, channel in enumerate(channels):
            channel.send(index)
        assert [channel.receive() for channel in channels] == list(range(n))
        pids = [gw.remote_exec("import os; channel.send(os.getpid())").receive() for gw in gws]
        _, local, remote = report(started, before, pids)
    else:
        gw = group.makegateway("popen")
        pid = gw.remote_exec("import os; channel.send(os.getpid())").receive()
        channels = [gw.remote_exec(ECHO) for _ in range(n)]
        for index, channel in enumerate(channels):
            channel.send(index)
        _, local, remote = report(started, before, [pid])
        assert [channel.receive() for channel in channels] == list(range(n))
    group.terminate(timeout=30)
    print(json.dumps([time.perf_counter() - started, local, remote]))
else:
    import asyncgw

    async def main():
        started, before = time.perf_counter(), me.memory_info().rss
        async with asyncgw.Group(exit_timeout=30) as group:
            if series == "gateways":
                gws = await group.makegateways(["popen"] * n)
                channels = [gw.remote_exec(ECHO) for gw in gws]
                for index, channel in enumerate(channels):
                    await channel.send(index)
                assert [await channel.receive() for channel in channels] == list(range(n))
                _, local, remote = report(started, before, [gw.remote_pid for gw in gws])
            else:
                gw = await group.makegateway("popen")
                channels = [gw.remote_exec(ASYNC_ECHO) for _ in range(n)]
                for index, channel in enumerate(channels):
                    await channel.send(index)
                _, local, remote = report(started, before, [gw.remote_pid])
                echoes = await asyncio.gather(*(channel.receive() for channel in channels))
                assert echoes == list(range(n))
        print(json.dumps([time.perf_counter() - started, local, remote]))

    asyncio.run(main())
"""


def measure_point(impl: str, series: str, n: int) -> tuple[float, float, float] | None:
    """(seconds, local MiB growth, remote MiB) of one fresh run, or None if
    it failed or took too long (the reason goes to stderr)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, impl, series, str(n)],
            capture_output=True,
            text=True,
            timeout=POINT_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        print(f"  {impl} {series}={n}: over {POINT_TIMEOUT}s, dropped", file=sys.stderr)
        return None
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or ["?"]
        print(f"  {impl} {series}={n}: failed: {last[0]}", file=sys.stderr)
        return None
    seconds, local, remote = json.loads(done.stdout)
    return seconds, local, remote


def run(quick: bool) -> dict[str, Any]:
    points: dict[str, Any] = {"gateways": {}, "channels": {}}
    for series, sizes in (
        ("gateways", QUICK_GATEWAYS if quick else GATEWAYS),
        ("channels", QUICK_CHANNELS if quick else CHANNELS),
    ):
        for n in sizes:
            for impl in ("asyncgw", "execnet"):
                slow = impl == "execnet" and n >= 128
                reps = 1 if slow else 3
                samples = [s for s in (measure_point(impl, series, n) for _ in range(reps)) if s]
                points[series].setdefault(impl, {})[n] = samples
                middle = medians(samples)
                if middle:
                    seconds, local, remote = middle
                    print(
                        f"  {series}={n:<6} {impl:8} {seconds * 1e3:9.1f} ms"
                        f"  local +{local:7.1f} MiB  remote {remote:8.1f} MiB",
                        file=sys.stderr,
                    )
    return points


def medians(samples: list[Any]) -> list[float] | None:
    return [statistics.median(x) for x in zip(*samples, strict=True)] if samples else None


def render(points: dict[str, Any]) -> str:
    lines = [
        f"{'series':10} {'n':>6}  {'asyncgw ms':>11} {'execnet ms':>11} {'ratio':>6}"
        f"  {'local MiB a/e':>15}  {'remote MiB a/e':>17}"
    ]
    for series, by_impl in points.items():
        for n in by_impl["asyncgw"]:
            mine = medians(by_impl["asyncgw"][n])
            theirs = medians(by_impl["execnet"].get(n, []))
            cells = [f"{series:10} {n:>6}"]
            if mine is None:
                cells.append("  asyncgw failed")
            elif theirs is None:
                cells.append(f"  {mine[0] * 1e3:11.1f} {'failed':>11} {'-':>6}")
                cells.append(f"  {mine[1]:7.1f}/{'-':>7}  {mine[2]:8.1f}/{'-':>8}")
            else:
                cells.append(
                    f"  {mine[0] * 1e3:11.1f} {theirs[0] * 1e3:11.1f} {mine[0] / theirs[0]:6.2f}"
                )
                cells.append(
                    f"  {mine[1]:7.1f}/{theirs[1]:<7.1f}  {mine[2]:8.1f}/{theirs[2]:<8.1f}"
                )
            lines.append("".join(cells))
    return "\n".join(lines)


def plot(points: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    panels = [
        ("gateways", 0, "time to start, echo, terminate (s)"),
        ("gateways", 2, "sum of workers' RSS (MiB)"),
        ("channels", 0, "time to open, echo, close (s)"),
        ("channels", 2, "worker RSS (MiB)"),
    ]
    for axis, (series, column, label) in zip(axes.flat, panels, strict=True):
        for impl, style in (("asyncgw", "o-"), ("execnet", "s--")):
            xs, ys = [], []
            for n, samples in points[series][impl].items():
                if samples:
                    xs.append(int(n))
                    ys.append(statistics.median(sample[column] for sample in samples))
            axis.plot(xs, ys, style, label=impl)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel(f"{series} ({'popen' if series == 'gateways' else 'on one gateway'})")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle("asyncgw and execnet: scaling (median of fresh runs)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="up to 32 gateways, 1000 channels")
    parser.add_argument("--json", metavar="PATH", help="write every sample as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write the 2x2 plot as PNG")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    points = run(args.quick)
    print(render(points))
    print(f"total {time.perf_counter() - started:.0f}s")
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(points, stream, indent=1)
    if args.plot:
        plot(points, args.plot)
    leftovers = psutil.Process().children(recursive=True)
    for child in leftovers:
        child.kill()
    if leftovers:
        print(f"child processes left behind: {leftovers}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
