"""Gateways through Slurm's srun beside local popen gateways, in one run.

Starts the test suite's throw-away single-node Slurm (``tests/slurmcluster.py``:
munged, slurmctld and slurmd on loopback, from Debian's ``slurm-wlm`` and
``munge``), then measures, taking turns with popen (harness.measure):

- 1 gateway: start, one round trip, exit — ``slurm=`` (its own job and
  step, outside any allocation) beside ``popen``;
- 8 gateways in one allocation: a driver run under ``salloc -N1 -n8``
  starts ``Group(slurm_specs(per_node=8))`` (8 steps of that job, with
  ``--overlap``), one round trip each, exit; beside 8 popen gateways in the
  same driver.

The ratio is slurm=/popen: what srun, slurmctld and slurmstepd add to a
gateway's start. Needs root and Slurm (``apt-get install slurm-wlm munge``).
``python benchmarks/bench_slurm.py [--quick]``; writes
``docs/_results/slurm.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from harness import (
    EXIT_TIMEOUT,
    ROOT,
    Recorder,
    Result,
    format_cell,
    format_ratio,
    format_rows,
    measure,
    reap_children,
)

import asyncgw

sys.path.insert(0, str(ROOT))
from tests.slurmcluster import SlurmCluster, slurm_cluster

ECHO = "channel.send(channel.receive())"


async def start_rt_exit(specs: list[str]) -> float:
    """Seconds to start ``specs`` as a group, one round trip on each, exit."""
    started = time.perf_counter()
    async with asyncgw.Group(specs, exit_timeout=EXIT_TIMEOUT) as group:
        channels = [gateway.remote_exec(ECHO) for gateway in group]
        for channel in channels:
            await channel.send(1)
        for channel in channels:
            await channel.receive()
    return time.perf_counter() - started


async def inside(reps: int, warmup: int, count: int) -> dict[str, list[float]]:
    """Run under salloc: ``count`` slurm= steps of this job beside ``count`` popen."""
    specs = asyncgw.slurm_specs(per_node=count)
    return await measure(
        warmup,
        reps,
        {
            "slurm": lambda: start_rt_exit(specs),
            "popen": lambda: start_rt_exit(["popen"] * count),
        },
    )


def in_allocation(cluster: SlurmCluster, reps: int, warmup: int, count: int) -> Result:
    env = {**cluster.env, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        ["salloc", "-N1", f"-n{count}", "-J", "bench-slurm", sys.executable, __file__,
         "--inside", str(count), "--reps", str(reps), "--warmup", str(warmup)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"salloc driver: rc {done.returncode}: {done.stderr[-2000:]}")
    samples = json.loads(lines[-1])
    return Result(
        f"{count} gateways in one allocation: start+rt+exit",
        "ms",
        higher_is_better=False,
        samples={name: [s * 1000 for s in values] for name, values in samples.items()},
    )


async def one_gateway(reps: int, warmup: int) -> Result:
    samples = await measure(
        warmup,
        reps,
        {
            "slurm": lambda: start_rt_exit(["slurm"]),
            "popen": lambda: start_rt_exit(["popen"]),
        },
    )
    return Result(
        "1 gateway: start+rt+exit",
        "ms",
        higher_is_better=False,
        samples={name: [s * 1000 for s in values] for name, values in samples.items()},
    )


def render(results: list[Result]) -> str:
    header = ["workload", "unit", "slurm=", "popen", "slurm/popen"]
    rows = [
        [
            r.workload,
            r.unit,
            format_cell(r, "slurm"),
            format_cell(r, "popen"),
            format_ratio(r.ratio("popen", mine_name="slurm")),
        ]
        for r in results
    ]
    return format_rows(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--json", metavar="PATH", help="default: docs/_results/slurm.json")
    parser.add_argument("--inside", type=int, help=argparse.SUPPRESS)  # the salloc driver
    parser.add_argument("--reps", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside:
        samples = asyncio.run(inside(args.reps, args.warmup, args.inside))
        print(json.dumps(samples), flush=True)
        return 0
    reps = 3 if args.quick else 10
    config = {"reps": reps, "warmup": 1, "allocation_gateways": 8, "nodes": 1}
    recorder = Recorder("slurm", peers=[], quick=args.quick)
    recorder.notes.append(
        "A single-node Slurm 22.05 on this machine (slurmctld, slurmd, munged on loopback, "
        "the test suite's throw-away config); popen is the peer, in the same run. "
        "Outside an allocation each slurm= gateway is a job of its own (an allocation "
        "request to slurmctld, then a step); inside one, a step of the current job."
    )
    started = time.perf_counter()
    os.environ.pop("SLURM_JOB_ID", None)
    try:
        with slurm_cluster() as cluster:
            os.environ["SLURM_CONF"] = cluster.env["SLURM_CONF"]
            results = [asyncio.run(one_gateway(reps, 1))]
            results.append(in_allocation(cluster, max(3, reps // 2), 1, 8))
            cluster.wait_empty(timeout=30)
    finally:
        leftovers = reap_children()
    print(f"slurm= beside popen on one node; medians; total {time.perf_counter() - started:.0f}s")
    print()
    print(render(results))
    recorder.write(results, config=config, path=args.json)
    return 1 if leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
