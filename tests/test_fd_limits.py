"""File descriptor limits: groups past the soft limit, one clear error past
the hard one (see ``asyncgw/_fdlimit.py``).

Each test runs a script in a fresh interpreter started with a lowered
``RLIMIT_NOFILE`` (the limit is per process, and the raise is for the life
of the process), and reads back one JSON line of what it saw. The script
counts its own children after the group is gone, so "nothing left running"
is checked where the processes were started.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Runs in the child interpreter: ``mode`` picks what it does.
SCRIPT = r"""
import asyncio, json, os, re, sys, time

import psutil

import asyncgw

try:
    from asyncgw import _fdlimit
except ImportError:  # a version without it (the tests must fail there)
    _fdlimit = None

mode, count = sys.argv[1], int(sys.argv[2])


def fds():
    return len(os.listdir("/proc/self/fd"))


def limit():
    import resource

    return list(resource.getrlimit(resource.RLIMIT_NOFILE))


def pid():
    import os

    return os.getpid()


def leftovers():
    # Everything started must be gone: wait for it (bounded), then report.
    deadline = time.monotonic() + 10
    while True:
        alive = [p.pid for p in psutil.Process().children(recursive=True)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


async def main():
    result = {"before": fds(), "limit_before": limit(), "asyncgw": asyncgw.__file__}
    group = asyncgw.Group()
    try:
        if mode == "group":
            gateways = await group.makegateways(["popen"] * count)
        elif mode == "one_by_one":
            gateways = [await group.makegateway("popen") for _ in range(count)]
        elif mode == "underestimate":
            if _fdlimit is not None:
                _fdlimit.FDS_PER_WORKER = 1  # the count passes: the shortage is met
            gateways = await group.makegateways(["popen"] * count)
        result["started"] = len(gateways)
        result["ids"] = len({gw.id for gw in gateways})
        result["limit_after"] = limit()
        result["peak"] = fds()
        pids = await asyncio.gather(*(gw.call(pid) for gw in gateways))
        result["answered"] = len(set(pids))
        result["worker_limits"] = sorted(
            {tuple(await gw.call(limit)) for gw in (gateways[0], gateways[-1])}
        )
    except Exception as exc:
        result["error"] = [type(exc).__name__, str(exc)]
    finally:
        await group.terminate(5.0)
    if "error" in result and mode != "underestimate":
        match = re.search(r"only (\d+) of them fit", result["error"][1])
        if match:  # the figure must be true: that many do start
            fit = int(match.group(1))
            try:
                async with asyncgw.Group(["popen"] * fit) as group:
                    result["fit_started"] = len(group)
            except Exception as exc:
                result["fit_error"] = repr(exc)
    result["left"] = leftovers()
    result["after"] = fds()
    print(json.dumps(result))


asyncio.run(main())
"""


def run_limited(
    tmp_path: Path, mode: str, count: int, soft: int, hard: int | None = None
) -> dict[str, Any]:
    """Run :data:`SCRIPT` (from a file: remote calls ship functions' source)
    with ``RLIMIT_NOFILE`` lowered to ``soft`` (and ``hard``) from its
    start; its JSON result, with its stderr."""
    script = tmp_path / "limited.py"
    script.write_text(SCRIPT)
    _, current_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new_hard = current_hard if hard is None else hard

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, new_hard))

    process = subprocess.run(
        [sys.executable, str(script), mode, str(count)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout's asyncgw
        preexec_fn=lower,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    result: dict[str, Any] = json.loads(process.stdout.strip().splitlines()[-1])
    result["stderr"] = process.stderr
    return result


def test_thousand_popen_gateways_under_soft_limit_1024(tmp_path: Path) -> None:
    """1000 popen gateways in one group where the soft limit is 1024: the
    group raises it; the workers see 1024 again; all of it ends cleanly."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 5000:
        pytest.skip(f"the hard limit here ({hard}) is too low for 1000 gateways")
    result = run_limited(tmp_path, "group", 1000, soft=1024)
    assert "error" not in result, result["error"]
    assert result["limit_before"][0] == 1024
    assert result["started"] == result["ids"] == result["answered"] == 1000
    assert result["limit_after"][0] > result["peak"] > 1024
    assert result["worker_limits"] == [[1024, result["limit_before"][1]]]
    assert result["left"] == []
    assert result["after"] == result["before"]
    assert result["stderr"] == ""


def test_one_by_one_past_soft_limit(tmp_path: Path) -> None:
    """Gateways started one at a time raise the soft limit as they need."""
    result = run_limited(tmp_path, "one_by_one", 30, soft=64)
    assert "error" not in result, result["error"]
    assert result["started"] == result["answered"] == 30
    assert result["limit_after"][0] > 64
    assert result["left"] == []
    assert result["stderr"] == ""


def test_past_hard_limit_one_clear_error(tmp_path: Path) -> None:
    """1000 gateways under a hard limit of 256: one GatewayError that names
    the limit and how many fit (and that many do start), no warning per
    gateway, nothing started, nothing left running."""
    result = run_limited(tmp_path, "group", 1000, soft=256, hard=256)
    kind, message = result["error"]
    assert kind == "GatewayError"
    assert "RLIMIT_NOFILE" in message
    assert "256" in message
    assert "Nothing was started" in message
    fit = int(re.search(r"only (\d+) of them fit", message).group(1))  # type: ignore[union-attr]
    assert 0 < fit < 1000
    assert result["fit_started"] == fit
    assert result["left"] == []
    assert result["after"] == result["before"]
    assert result["stderr"] == ""  # no warning flood


def test_shortage_met_anyway_is_one_clear_error(tmp_path: Path) -> None:
    """When the count misleads (here: patched to say 1 descriptor a worker),
    the shortage met while starting is the same one error, everything
    started is killed, and no descriptor is left open."""
    result = run_limited(tmp_path, "underestimate", 150, soft=256, hard=256)
    kind, message = result["error"]
    assert kind == "GatewayError"
    assert "RLIMIT_NOFILE" in message and "256" in message
    assert "Everything started was killed" in message
    assert result["left"] == []
    assert result["after"] == result["before"]
    assert "fork server" not in result["stderr"]
    assert result["stderr"] == ""


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.anyio
async def test_three_descriptors_per_popen_gateway() -> None:
    """A popen gateway used from asyncio holds 3 descriptors here (its
    three pipes). Counted as the growth from 20 to 40 gateways, so that
    what the loop and the group's fork server hold once (a socket; on 3.13
    asyncio opens one or two more of its own) is not counted per gateway."""
    import asyncgw

    before = open_fds()
    async with asyncgw.Group(["popen"] * 20) as group:
        first = open_fds()
        await group.makegateways(["popen"] * 20)
        grown = open_fds() - first
        assert len(group) == 40
    assert grown <= 3 * 20
    assert first - before <= 3 * 20 + 4
    assert open_fds() == before
