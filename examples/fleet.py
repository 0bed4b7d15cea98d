"""The fleet, execo style: a command on many hosts, a tree pushed to them,
logs pulled back, a report, with failures as data.

With no arguments it runs on four local gateways (no SSH needed), which
stand in for hosts; give SSH hosts as a node set to run on them instead
(``python examples/fleet.py 'root@node[1-8]'``; they need only sshd and a
POSIX shell, not Python).

Run: python examples/fleet.py [HOSTS]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

import asyncgw
from asyncgw.fleet import Get, Put, Remote, Report, SequentialActions, fold


async def main(hosts_pattern: str | None) -> None:
    async with asyncgw.Group() as group:
        if hosts_pattern is None:
            # Local gateways play the hosts: the same actions, any transport.
            hosts: object = await group.makegateways([f"popen//id=node{i}" for i in range(1, 5)])
        else:
            hosts = hosts_pattern
        with tempfile.TemporaryDirectory() as workdir:
            await run_on(hosts, Path(workdir))


async def run_on(hosts: object, workdir: Path) -> None:
    # A tree to push: a script and some data.
    tree = workdir / "job"
    tree.mkdir()
    (tree / "job.sh").write_text('echo "job on $1: $(wc -c < "$2") bytes"\n')
    (tree / "data.bin").write_bytes(os.urandom(100_000))
    remote_dir = str(workdir / "remote" / "{{{host}}}")  # hosts apart, even on one machine

    # Each host gets a share of the work: {{expression}} is indexed by host.
    shares = ["alpha", "beta", "gamma"]  # noqa: F841  # read by {{shares}} below
    push = Put(hosts, [str(tree)], remote_dir, create_dirs=True, name="push the job")
    work = Remote(
        "cd " + remote_dir + "/job && sh job.sh {{{host}}} data.bin > out.log && "
        "echo share={{shares}} && test {{{host}}} != node3",
        hosts,
        nolog_exit_code=True,  # a failure is reported below, as data
        name="run it",
    )
    logs_dir = str(workdir / "logs" / "{{{host}}}")
    pull = Get(hosts, [f"{remote_dir}/job/out.log"], logs_dir, create_dirs=True, name="pull logs")
    pipeline = SequentialActions([push, work, pull], name="push, work, pull")
    await pipeline.run()

    for process in work.processes:
        status = "ok" if process.ok else f"failed (exit {process.exit_code})"
        print(f"{process.host_name}: {process.stdout.strip()} -> {status}")
    logs = sorted((workdir / "logs").glob("*/out.log"))
    print(f"pulled {len(logs)} logs: {logs[0].read_text().strip() if logs else '-'}")
    failed = [process.host_name for process in work.processes if not process.ok]
    print(f"failed hosts: {fold(failed) if failed else 'none'}")
    print(Report(pipeline).to_string())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
