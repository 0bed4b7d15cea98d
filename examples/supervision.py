"""Supervision: a worker that dies is reported, with its cause, and its group
starts a new one with the same id.

Run: python examples/supervision.py
"""

from __future__ import annotations

import asyncio

import asyncgw

CRASH = """
import os, signal, sys
sys.stderr.write("worker: giving up\\n")
sys.stderr.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


async def main() -> None:
    policy = asyncgw.RestartPolicy(max_restarts=2, backoff=0.2)
    async with asyncgw.Group(restart=policy) as group:
        restarted: asyncio.Queue[asyncgw.Gateway] = asyncio.Queue()
        group.on_death(lambda death: print("died:", death))
        group.on_restart(lambda gateway, death: restarted.put_nowait(gateway))

        first = await group.makegateway("popen//id=worker")
        first.remote_exec(CRASH)
        death = await first.died()
        print(f"signal {death.signal_name}, last stderr line {death.stderr_tail[-1]!r}")

        second = await restarted.get()
        print("restarted:", second, "is group['worker']:", group["worker"] is second)
        print("the new worker answers:", await second.remote_exec("channel.send(42)").receive())
    # Leaving the block ends the group: a planned end, never restarted.
    print("planned end:", second.death)


if __name__ == "__main__":
    asyncio.run(main())
