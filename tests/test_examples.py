"""The example scripts run as a user would run them, and say the right thing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_quickstart() -> None:
    out = run("quickstart.py")
    assert "doubled remotely: 42" in out
    assert "summed by async remote code: 45" in out
    assert "remote error: json.decoder.JSONDecodeError" in out
    assert "<Gateway id='worker' receive-live" in out


def test_fanout() -> None:
    out = run("fanout.py", "3", "30000")
    assert "3 gateways up" in out
    assert "<Group ['gw0', 'gw1', 'gw2']>" in out
    assert "results match local computation: True" in out


def test_fleet() -> None:
    out = run("fleet.py")
    for host, share in (("node1", "alpha"), ("node2", "beta"), ("node4", "alpha")):
        assert f"{host}: share={share} -> ok" in out
    assert "node3: share=gamma -> failed (exit 1)" in out
    assert "pulled 4 logs: job on node1: 100000 bytes" in out
    assert "failed hosts: node3" in out
    assert "push, work, pull" in out and "pull logs" in out


def test_pipeline() -> None:
    out = run("pipeline.py", "20")
    assert "pipeline done: 20 items, sum 2470, complete: True" in out
    assert "!! w2 died: killed by SIGKILL" in out
    assert "-> w2 made again on the restarted interpreter, redoing 10" in out
    for logger in ("asyncgw.remote.source.source", "asyncgw.remote.w1.worker"):
        assert logger in out  # forwarded, with host and pid
    assert "asyncgw.remote.w1.stdout" in out and "items so far" in out
