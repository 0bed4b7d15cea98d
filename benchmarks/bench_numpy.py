"""numpy arrays through asyncgw's pool beside a raw pipe, in one run.

Usage::

    python benchmarks/bench_numpy.py [--quick] [--repeat N] [--tasks N] [--json out.json]

The workload: ``--tasks`` (64) arrays of 1 MB (float64) go to one worker
and come back, one task each (``pool.map(echo, arrays)``, ``echo``
returning its argument); the figure is MB/s, the megabytes in plus the
megabytes out over the wall time of the map. Contenders, each one child
process fed through pipes:

- ``asyncgw``: ``await pool.map(echo, arrays, chunksize=1)`` on
  ``asyncgw.Pool(1)`` (one popen gateway): dtype, shape and raw buffer on
  the wire, decoded into new arrays on each side;
- ``raw pipe``: the same bytes poured through ``cat`` (1 MB writes to its
  stdin while its stdout is read back), no framing, no decoding: the
  ceiling a pipe allows here;
- ``ProcessPoolExecutor``: ``list(executor.map(echo, arrays))`` with one
  worker (pickle, protocol 5), for reference.

Contenders take turns (harness.measure), the first round is a discarded
warm-up, every answer is checked (the sum of what came back). The target:
asyncgw at least 0.8x the raw pipe. The results go to
``docs/_results/numpy.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import sys
import time

import numpy
import psutil
from harness import Recorder, Result, Target, measure, render_results, render_targets

import asyncgw

MB = 1 << 20


def echo(array):
    return array


async def pour(process: asyncio.subprocess.Process, blocks: list[bytes]) -> int:
    """Write ``blocks`` to ``cat`` while reading as much back; bytes read."""
    assert process.stdin is not None and process.stdout is not None
    total = sum(len(block) for block in blocks)
    stdin, stdout = process.stdin, process.stdout

    async def write() -> None:
        for block in blocks:
            stdin.write(block)
            await stdin.drain()

    writer = asyncio.ensure_future(write())
    received = 0
    while received < total:
        received += len(await stdout.read(MB))
    await writer
    return received


async def run(args: argparse.Namespace) -> list[Result]:
    arrays = [numpy.full(MB // 8, float(i)) for i in range(args.tasks)]
    expected = sum(float(a.sum()) for a in arrays)
    blocks = [a.tobytes() for a in arrays]
    megabytes = 2 * args.tasks * MB / 1e6
    row = Result(f"numpy arrays in and out, {args.tasks} x 1 MB, 1 worker", "MB/s", True)
    loop = asyncio.get_running_loop()

    cat = await asyncio.create_subprocess_exec(
        "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    process_pool = concurrent.futures.ProcessPoolExecutor(1)
    async with asyncgw.Pool(1) as pool:

        async def with_asyncgw() -> float:
            started = time.perf_counter()
            results = await pool.map(echo, arrays, chunksize=1)
            elapsed = time.perf_counter() - started
            assert sum(float(r.sum()) for r in results) == expected
            return megabytes / elapsed

        async def with_pipe() -> float:
            started = time.perf_counter()
            received = await pour(cat, blocks)
            elapsed = time.perf_counter() - started
            assert received == len(blocks) * MB
            return megabytes / elapsed

        async def with_process_pool() -> float:
            def work() -> float:
                started = time.perf_counter()
                results = list(process_pool.map(echo, arrays))
                elapsed = time.perf_counter() - started
                assert sum(float(r.sum()) for r in results) == expected
                return megabytes / elapsed

            return await loop.run_in_executor(None, work)

        try:
            samples = await measure(
                1,
                args.repeat,
                {
                    "asyncgw": with_asyncgw,
                    "raw pipe": with_pipe,
                    "ProcessPoolExecutor": with_process_pool,
                },
            )
        finally:
            process_pool.shutdown()
            assert cat.stdin is not None
            cat.stdin.close()
            await cat.wait()
    for name, values in samples.items():
        for value in values:
            row.add(name, value)
    return [row]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 tasks, 1 round")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--json", help="results file (default: docs/_results/numpy.json)")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.repeat = 16, 1
    recorder = Recorder("numpy", peers=["numpy"], quick=args.quick)
    rows = asyncio.run(run(args))
    targets = [
        Target("numpy arrays, against a raw pipe", "numpy arrays", "asyncgw", "raw pipe", 0.8,
               at_most=False),
    ]  # fmt: skip
    recorder.notes.append("MB/s: megabytes in plus megabytes out over the map's wall time")
    path = recorder.write(
        rows, targets, config={"tasks": args.tasks, "repeat": args.repeat}, path=args.json
    )
    contenders = ["asyncgw", "raw pipe", "ProcessPoolExecutor"]
    print(render_results(rows, contenders, ["raw pipe", "ProcessPoolExecutor"]))
    import json

    print("\n".join(render_targets(json.loads(path.read_text()))))
    left = psutil.Process().children(recursive=True)
    _, alive = psutil.wait_procs(left, timeout=5)
    for child in alive:
        child.kill()
    if alive:
        print(f"child processes left behind: {[c.pid for c in alive]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
