"""The output-throughput row of ``bench_fleet``: a big output read back.

Every contender reads the output of ``cat FILE`` (``--output-mb`` MB of
71-byte lines; 1 MB = 10^6 bytes) and checks its size; MB/s is size over
time, from the start of the command to its end, connecting included for
the SSH rows. Each measurement runs in a fresh interpreter:

- ``asyncgw local``: ``Local("cat FILE")``;
- ``asyncgw gateway``: ``Remote("cat FILE", [popen gateway])`` (the
  gateway started before the clock);
- ``asyncgw ssh``: ``Remote("cat FILE", Host(farm host))``;
- ``OpenSSH``: ``ssh host cat FILE``, its output read by this script;
- ``parallel-ssh``: ``run_command("cat FILE")`` and its ``stdout`` read.

The asyncgw rows also give the event loop's worst stall, from a probe
that sleeps 5 ms in a loop. The contenders take turns; median of
``repeat`` rounds after a warm-up. Imported by ``bench_fleet.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness import Result

MB = 1_000_000
LINE = b"0123456789" * 7 + b"\n"

CONTENDERS = ("asyncgw local", "asyncgw gateway", "asyncgw ssh", "OpenSSH", "parallel-ssh")

#: Run in a fresh interpreter: argv = kind, file, size, host, key.
ASYNCGW = """
import asyncio, sys, time
import asyncgw
from asyncgw.fleet import Host, Local, Remote
kind, path, size, host, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]

async def main():
    loop = asyncio.get_running_loop()
    worst = 0.0
    done = asyncio.Event()
    async def probe():
        nonlocal worst
        while not done.is_set():
            before = loop.time()
            await asyncio.sleep(0.005)
            worst = max(worst, loop.time() - before - 0.005)
    async with asyncgw.Group() as group:
        if kind == "local":
            action = Local("cat " + path)
        elif kind == "gateway":
            action = Remote("cat " + path, [await group.makegateway("popen")])
        else:
            params = {"user": "root", "keyfile": key, "known_hosts": None}
            action = Remote("cat " + path, Host(host), params)
        prober = asyncio.create_task(probe())
        start = time.perf_counter()
        await action.run()
        elapsed = time.perf_counter() - start
        done.set()
        await prober
        [process] = action.processes
        ok = process.finished_ok and process.captured["stdout"].size == size
        print(json.dumps({"seconds": elapsed, "ok": ok, "stall": worst}))

import json
asyncio.run(main())
"""

PSSH = """
import json, sys, time
from pssh.clients import ParallelSSHClient
path, size, host, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
start = time.perf_counter()
client = ParallelSSHClient([host], user="root", pkey=key, num_retries=1)
output = client.run_command("cat " + path)
total = 0
for line in output[0].stdout:
    total += len(line) + 1
client.join()
elapsed = time.perf_counter() - start
# Lines come without their newline: the file's last one may have none.
print(json.dumps({"seconds": elapsed, "ok": total in (size, size + 1), "stall": None}))
"""


def make_file(directory: Path, size_mb: int) -> Path:
    path = directory / "output.txt"
    block = LINE * (MB // len(LINE) + 1)
    with path.open("wb") as out:
        left = size_mb * MB
        while left:
            chunk = block[:left]
            out.write(chunk)
            left -= len(chunk)
    return path


def _one(contender: str, path: Path, size: int, host: str, key: Path) -> dict[str, object]:
    if contender.startswith("asyncgw"):
        kind = contender.split()[1]
        argv = [sys.executable, "-c", ASYNCGW, kind, str(path), str(size), host, str(key)]
    elif contender == "parallel-ssh":
        argv = [sys.executable, "-c", PSSH, str(path), str(size), host, str(key)]
    else:
        argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"]
        argv += ["-o", "UserKnownHostsFile=/dev/null", "-i", str(key), f"root@{host}"]
        argv += ["cat", str(path)]
        import time

        start = time.perf_counter()
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as ssh:
            assert ssh.stdout is not None
            total = 0
            while data := ssh.stdout.read1(1 << 20):
                total += len(data)
            status = ssh.wait()
        elapsed = time.perf_counter() - start
        return {"seconds": elapsed, "ok": status == 0 and total == size, "stall": None}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode or not lines:
        return {"seconds": None, "ok": False, "stall": None, "error": result.stderr[-500:]}
    return dict(json.loads(lines[-1]))


def measure_output(
    directory: Path,
    host: str,
    key: Path,
    size_mb: int,
    repeat: int,
    progress: Callable[[str], None],
) -> tuple[str, list[Result]]:
    """The row's table, as text, and its rows (MB/s; the worst stall, ms)."""
    contenders = [name for name in CONTENDERS if name != "parallel-ssh" or _has_pssh()]
    path = make_file(directory, size_mb)
    size = path.stat().st_size
    samples: dict[str, list[dict[str, object]]] = {name: [] for name in contenders}
    try:
        for round_ in range(repeat + 1):
            order = contenders[round_ % len(contenders) :] + contenders[: round_ % len(contenders)]
            for name in order:
                sample = _one(name, path, size, host, key)
                progress(f"  output {name} round {round_}: {sample}")
                if round_:
                    samples[name].append(sample)
    finally:
        os.unlink(path)
    lines = [
        f"output throughput: cat of {size_mb} MB of 71-byte lines, read back and counted "
        f"(MB/s, median of {repeat} after 1 warm-up; stall: worst event-loop lag, ms)",
    ]
    reference = None
    for name in contenders:
        rates = [size / MB / s["seconds"] for s in samples[name] if s.get("ok") and s["seconds"]]
        failed = sum(1 for s in samples[name] if not s.get("ok"))
        if not rates:
            lines.append(f"  {name:16} failed ({samples[name][:1]})")
            continue
        rate = statistics.median(rates)
        if name == "OpenSSH":
            reference = rate
        stalls = [float(s["stall"]) for s in samples[name] if s.get("stall") is not None]  # type: ignore[arg-type]
        stall = f"  stall {max(stalls) * 1000:.0f} ms" if stalls else ""
        failures = f"  ({failed} failed)" if failed else ""
        lines.append(f"  {name:16} {rate:8.0f} MB/s{stall}{failures}")
    if reference:
        lines.append("  ratios over OpenSSH's ssh host cat:")
        for name in contenders:
            rates = [
                size / MB / s["seconds"] for s in samples[name] if s.get("ok") and s["seconds"]
            ]
            if rates:
                lines.append(f"    {name:16} {statistics.median(rates) / reference:.2f}x")
    rate = Result(f"output: cat {size_mb} MB, read back", "MB/s", higher_is_better=True)
    stall = Result(f"output: worst event-loop stall, cat {size_mb} MB", "ms", False)
    for name in contenders:
        for s in samples[name]:
            if s.get("ok") and s["seconds"]:
                rate.add(name, size / MB / float(s["seconds"]))  # type: ignore[arg-type]
            if s.get("stall") is not None:
                stall.add(name, float(s["stall"]) * 1000)  # type: ignore[arg-type]
    return "\n".join(lines), [rate, stall]


def _has_pssh() -> bool:
    probe = [sys.executable, "-c", "import pssh.clients"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0
