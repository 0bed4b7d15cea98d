"""Parallel fan-out over local gateways: the main job of the README.

Starts N worker interpreters at once, deals out chunks of work over
channels, gathers the results, and checks them against a local run.

Run: python examples/fanout.py [workers] [numbers]
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time

import asyncgw

#: The remote side: a sync loop over the channel (it runs in a worker thread).
WORKER = """
import hashlib
for start, stop in channel:
    digest = hashlib.sha256()
    for number in range(start, stop):
        digest.update(str(number * number).encode())
    channel.send((start, digest.hexdigest()))
"""


def local_digest(start: int, stop: int) -> str:
    digest = hashlib.sha256()
    for number in range(start, stop):
        digest.update(str(number * number).encode())
    return digest.hexdigest()


async def fan_out(workers: int, numbers: int, chunk: int) -> dict[int, str]:
    chunks = [(start, min(start + chunk, numbers)) for start in range(0, numbers, chunk)]
    results: dict[int, str] = {}
    async with asyncgw.Group() as group:
        started = time.perf_counter()
        await group.makegateways(["popen"] * workers)  # all start in parallel
        print(f"{workers} gateways up in {time.perf_counter() - started:.3f}s: {group}")
        channels = group.remote_exec(WORKER)

        async def drive(channel: asyncgw.Channel, share: list[tuple[int, int]]) -> None:
            for bounds in share:  # keep every worker busy: send all, then collect
                await channel.send(bounds)
            for _ in share:
                start, digest = await channel.receive()
                results[start] = digest
            channel.close()

        async with asyncio.TaskGroup() as tasks:
            for index, channel in enumerate(channels):
                tasks.create_task(drive(channel, chunks[index::workers]))
    return results


def main() -> int:
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    numbers = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000_000
    chunk = max(1, numbers // (workers * 8))
    started = time.perf_counter()
    results = asyncio.run(fan_out(workers, numbers, chunk))
    remote_time = time.perf_counter() - started
    started = time.perf_counter()
    expected = {start: local_digest(start, min(start + chunk, numbers)) for start in results}
    local_time = time.perf_counter() - started
    ok = results == expected and len(results) == -(-numbers // chunk)
    print(f"{len(results)} chunks of {chunk} numbers hashed on {workers} gateways")
    print(f"remote (incl. start/stop): {remote_time:.2f}s, local single process: {local_time:.2f}s")
    print("results match local computation:", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
