"""A pipeline of remote objects on several gateways, pyacq style: a source,
two workers and a sink, each an object in its own interpreter, used
through proxies. Their logs arrive here, under ``asyncgw.remote.<id>``.
Halfway, one worker's interpreter is killed: its group restarts it with the
same id, the pipeline makes the worker again on the new interpreter and
redoes the item that was lost, and the results come out complete.

Run: python examples/pipeline.py [items]
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import asyncgw


class Source:
    """Shipped as source, like the classes below: each is self-contained."""

    def __init__(self, count: int) -> None:
        self.count = count

    def items(self):  # type: ignore[no-untyped-def]
        import logging

        logging.getLogger("source").info("sending %d items", self.count)
        yield from range(self.count)


class Worker:
    def __init__(self, name: str) -> None:
        import logging
        import os

        self.log = logging.getLogger("worker")
        self.log.info("%s ready in process %d", name, os.getpid())
        self.done = 0

    def work(self, item: int) -> int:
        self.done += 1
        if self.done % 5 == 0:
            print(f"{self.done} items so far")  # forwarded too, at INFO
        return item * item


class Sink:
    def __init__(self) -> None:
        self.results: dict[int, int] = {}

    def put(self, item: int, result: int) -> None:
        self.results[item] = result

    def summary(self) -> tuple[int, int]:
        return len(self.results), sum(self.results.values())


async def main(count: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)-34s %(message)s")
    remote = logging.StreamHandler(sys.stdout)  # forwarded records carry host and pid
    remote.setFormatter(logging.Formatter("%(name)-34s %(host)s:%(pid)s  %(message)s"))
    logging.getLogger("asyncgw.remote").addHandler(remote)
    logging.getLogger("asyncgw.remote").propagate = False
    policy = asyncgw.RestartPolicy(max_restarts=2, backoff=0.2)
    async with asyncgw.Group(forward_logs=True, restart=policy) as group:
        names = ["source", "w1", "w2", "sink"]
        await group.makegateways([f"popen//id={name}" for name in names])
        group.on_death(
            lambda death: death.expected or print(f"!! {death.gateway_id} died: {death.cause}")
        )
        restarted: dict[str, asyncio.Queue[asyncgw.Gateway]] = {
            name: asyncio.Queue() for name in ("w1", "w2")
        }
        group.on_restart(lambda gateway, death: restarted[gateway.id].put_nowait(gateway))
        source = await group["source"].create(Source, count)
        sink = await group["sink"].create(Sink)
        workers = {name: await group[name].create(Worker, name) for name in ("w1", "w2")}

        async def work_on(name: str, item: int) -> int:
            """The item on worker ``name``; if its interpreter died, wait for
            the restarted one, make the worker again there, and redo it."""
            while True:
                try:
                    result: int = await workers[name].work(item)
                    return result
                except asyncgw.GatewayLost:
                    gateway = await restarted[name].get()  # its successor, same id
                    workers[name] = await gateway.create(Worker, name)
                    print(f"-> {name} made again on the restarted interpreter, redoing {item}")

        killed = False
        async for item in source.items():
            name = "w1" if item % 2 else "w2"
            if item == count // 2 and not killed:  # halfway: kill w2's interpreter
                pid = group["w2"].remote_pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                killed = True
            await sink.put(item, await work_on(name, item))

        done, total = await sink.summary()
        expected = sum(item * item for item in range(count))
        print(f"pipeline done: {done} items, sum {total}, complete: {total == expected}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
