"""Where a popen gateway's start goes: the far side's parts, in CPU time.

Runs, each ``--repeat`` times, and prints the median CPU time (user+sys of
the child, from ``os.wait4``) and wall time of:

- ``bare``: ``python -c pass``;
- ``loader``: ``python -c LOADER`` fed a second stage that only exits
  (interpreter start plus reading stdin);
- ``install``: the same, the second stage installing the worker's modules
  (shipping, compiling, their imports), then exiting;
- ``hello``: the whole bootstrap up to the worker's HELLO, then the
  stream's end (the worker exits on it).

Not a benchmark (no peer): a diagnosis aid for the start row of bench_core.

    python benchmarks/profile_start.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from asyncgw import _bootstrap


def run(argv: list[str], stdin: bytes, wait_for: bytes | None) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(stdin)
    proc.stdin.flush()
    if wait_for is not None:
        got = b""
        while wait_for not in got:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, got
            got += chunk
    proc.stdin.close()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    return usage.ru_utime + usage.ru_stime, wall


def stage(text: str) -> bytes:
    data = text.encode()
    return b"%010d" % len(data) + data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    python = sys.executable
    full = _bootstrap.bootstrap_payload({"id": "p"})
    text = full[10:].decode()
    install_only = text[: text.rindex("sys.modules[")]
    cases = {
        "bare": ([python, "-c", "pass"], b"", None),
        "loader": ([python, "-c", _bootstrap.LOADER], stage("pass"), None),
        "install": ([python, "-c", _bootstrap.LOADER], stage(install_only), None),
        "hello": ([python, "-c", _bootstrap.LOADER], full, b"ASYNCGW\n"),
    }
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(args.repeat):
        for name, (argv, stdin, wait_for) in cases.items():
            samples[name].append(run(argv, stdin, wait_for))
    bare = statistics.median(cpu for cpu, _ in samples["bare"])
    for name, values in samples.items():
        cpu = statistics.median(c for c, _ in values)
        wall = statistics.median(w for _, w in values)
        print(
            f"{name:8} cpu {cpu * 1e3:6.1f} ms ({cpu / bare:4.2f}x bare)  wall {wall * 1e3:6.1f} ms"
        )


if __name__ == "__main__":
    main()
