"""asyncgw in a page: a local gateway, remote code, a call, async remote code.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
import os

import asyncgw


def hostname_and_pid():  # type: ignore[no-untyped-def]
    """Runs remotely: sent as source, so it imports what it needs itself."""
    import os
    import socket

    return socket.gethostname(), os.getpid()


async def main() -> None:
    async with asyncgw.Group() as group:  # leaving the block terminates its gateways
        gw = await group.makegateway("popen//id=worker")
        print("gateway:", gw)

        # Source text runs remotely with a `channel` to talk over.
        channel = gw.remote_exec("channel.send(channel.receive() * 2)")
        await channel.send(21)
        print("doubled remotely:", await channel.receive())

        # A self-contained function, called with arguments, result returned.
        host, pid = await gw.call(hostname_and_pid)
        print(f"remote host {host}, remote pid {pid} (ours is {os.getpid()})")

        # Code with top-level await runs on the remote side's event loop.
        channel = gw.remote_exec(
            """
            import asyncio
            total = 0
            while (number := await channel.receive()) is not None:
                total += number
                await asyncio.sleep(0)
            await channel.send(total)
            """
        )
        for number in [*range(10), None]:
            await channel.send(number)
        print("summed by async remote code:", await channel.receive())

        info = await gw.remote_info()
        print(f"remote python {'.'.join(map(str, info.version_info[:3]))} in {info.cwd}")

        # Remote errors come back with the remote traceback.
        try:
            await gw.remote_exec("import json; json.loads('{oops')").receive()
        except asyncgw.RemoteError as error:
            print("remote error:", error.formatted.strip().splitlines()[-1])


if __name__ == "__main__":
    asyncio.run(main())
