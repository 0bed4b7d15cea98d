"""Parallel fan-out: a map over local gateways, beside ProcessPoolExecutor.

Hashes the squares of the first N numbers in chunks, three ways, timing
each from start to stop (the pool's start and shutdown included):

- ``asyncgw.sync.Executor``: a ``concurrent.futures.Executor`` whose
  workers are gateways (here local interpreters; the same code runs on
  ssh hosts with ``Executor(gateways=["ssh=host1", "ssh=host2"])``);
- the stdlib's ``ProcessPoolExecutor``, on the same work;
- one process, no pool.

The function travels to each gateway once, as source: it must be
self-contained (imports inside), as for ``Gateway.call``.

Run: python examples/fanout.py [workers] [numbers]
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import time

from asyncgw.sync import Executor


def digest(start, stop):
    import hashlib

    sha = hashlib.sha256()
    for number in range(start, stop):
        sha.update(str(number * number).encode())
    return start, sha.hexdigest()


def timed_map(make, starts, stops):
    """Start a pool, map ``digest`` over the chunks, shut it down; the
    results, and the seconds to start and for it all."""
    started = time.perf_counter()
    with make() as executor:
        up = time.perf_counter() - started
        results = dict(executor.map(digest, starts, stops))
    return results, up, time.perf_counter() - started


def main() -> int:
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else os.cpu_count() or 2
    numbers = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000_000
    chunk = max(1, numbers // (workers * 16))
    starts = list(range(0, numbers, chunk))
    stops = [min(start + chunk, numbers) for start in starts]

    ours, up, ours_time = timed_map(lambda: Executor(workers), starts, stops)
    print(f"{workers} gateways up in {up:.3f}s")
    stdlib, _, stdlib_time = timed_map(
        lambda: concurrent.futures.ProcessPoolExecutor(workers), starts, stops
    )
    started = time.perf_counter()
    local = dict(map(digest, starts, stops))
    local_time = time.perf_counter() - started

    print(f"{len(starts)} chunks of {chunk} numbers, {workers} workers, start and stop included:")
    print(f"  asyncgw.sync.Executor        {ours_time:.2f}s  {local_time / ours_time:.2f}x")
    print(f"  ProcessPoolExecutor          {stdlib_time:.2f}s  {local_time / stdlib_time:.2f}x")
    print(f"  one process, no pool         {local_time:.2f}s  1.00x")
    ok = ours == stdlib == local and len(ours) == len(starts)
    print("results match local computation:", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
