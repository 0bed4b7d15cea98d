"""Profile the worker's garbage collector against the number of channels.

Opens N channels on one popen gateway (``exec``: a remote thread each;
``async``: an async echo each; ``sent``: served callbacks), one echo each,
then ends them; reports the worker's CPU time (from /proc) and, from a
``gc.callbacks`` hook installed in the worker first, the collections per
generation and the time spent in them. Not a benchmark: a diagnosis aid.

    python benchmarks/profile_worker_gc.py [--how exec|async|sent] [N ...]
"""

from __future__ import annotations

import argparse
import asyncio
import os

import asyncgw

HOOK = """
import gc, time
stats = {0: [0, 0.0, 0], 1: [0, 0.0, 0], 2: [0, 0.0, 0]}
start = [0.0]
def hook(phase, info):
    if phase == 'start':
        start[0] = time.thread_time()
    else:
        s = stats[info['generation']]
        s[0] += 1
        s[1] += time.thread_time() - start[0]
        s[2] += info['collected']
gc.callbacks.append(hook)
import sys
sys.modules['__gcstats__'] = type(sys)('__gcstats__')
sys.modules['__gcstats__'].stats = stats
channel.send(None)
"""

REPORT = """
import sys, gc
channel.send((sys.modules['__gcstats__'].stats, gc.get_count(), len(gc.get_objects()),
              gc.get_threshold(), gc.isenabled()))
"""

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
SERVE_SENT = (
    "for served in channel:\n    if served is None:\n        break\n"
    "    served.setcallback(served.send)\n"
)


def cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one(how: str, count: int, setup: str) -> None:
    async with asyncgw.Group() as group:
        gateway = await group.makegateway("popen")
        hook = gateway.remote_exec(setup + "\n" + HOOK)
        await hook.receive()
        pid = gateway.remote_pid
        before = cpu_of(pid)
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
            return await channel.receive(120)

        answers = await asyncio.gather(*(echo(ch, i) for i, ch in enumerate(channels)))
        assert answers == list(range(count))
        if how == "sent":
            for channel in channels:
                channel.close()
            await control.send(None)
            await control.waitclose(120)
        else:
            await asyncio.gather(*(channel.send(None) for channel in channels))
            await asyncio.gather(*(channel.waitclose(120) for channel in channels))
        cpu = cpu_of(pid) - before
        report = gateway.remote_exec(REPORT)
        stats, _counts, nobjects, threshold, enabled = await report.receive()
        print(
            f"{how:5} {count:6d}: worker cpu {cpu:.2f} s; gc enabled={enabled} "
            f"threshold={threshold} objects={nobjects}"
        )
        for gen, (n, seconds, collected) in sorted(stats.items()):
            print(f"    gen{gen}: {n:6d} collections {seconds:.3f} s, {collected} collected")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--how", default="exec", choices=["exec", "async", "sent"])
    parser.add_argument("counts", nargs="*", type=int, default=[5000, 10000, 20000])
    parser.add_argument("--setup", default="", help="code the worker runs first (gc knobs)")
    args = parser.parse_args()
    for count in args.counts:
        asyncio.run(one(args.how, count, args.setup))


if __name__ == "__main__":
    main()
