"""The example scripts run as a user would run them, and say the right thing.

Their output, as shown in the docs (``docs/examples/<name>.out``), is a
real run's; each test here runs the example again and checks that the
stored output still matches, once the figures that differ from run to run
(process ids, host names, timings, dates) are normalised. Lines are
compared as a multiset: a line that changes, appears or goes fails the
test, while lines printed concurrently (forwarded logs of several
interpreters) may come in another order.

``ASYNCGW_UPDATE_EXAMPLES=1 pytest tests/test_examples.py tests/test_notebook.py``
rewrites the stored outputs from the run instead.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
OUTPUTS = ROOT / "docs" / "examples"
UPDATE = os.environ.get("ASYNCGW_UPDATE_EXAMPLES") == "1"

#: Each example script and the arguments it runs with, here and in the docs.
ARGS: dict[str, tuple[str, ...]] = {
    "quickstart.py": (),
    "fanout.py": ("2",),  # the target: 2 workers, start and stop included
    "fleet.py": (),
    "pipeline.py": ("20",),
    "supervision.py": (),
}

#: What differs between two runs of the same example, and what it becomes.
VARYING = [
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"), "<date>"),
    (re.compile(r"\b\d+(\.\d+)?m?s\b"), "<time>"),  # 0.077s, 12ms
    (re.compile(r"\b\d+\.\d+x\b"), "<ratio>"),  # a speedup: 1.85x
    (re.compile(r"\b(pid|ours is|in process) \d+"), r"\1 <pid>"),
    (re.compile(r"(?<=\s)[\w.-]+:\d+(?=\s)"), "<host>:<pid>"),  # a forwarded record's origin
    (re.compile(r"remote host \S+,"), "remote host <host>,"),
    (re.compile(r"remote python \S+ in \S+"), "remote python <version> in <dir>"),
    (re.compile(r"\s+"), " "),  # columns padded to the width of what varies
]


def normalise(text: str) -> Counter[str]:
    """The lines of ``text`` with what varies between runs replaced."""
    lines = Counter[str]()
    for line in text.splitlines():
        for pattern, replacement in VARYING:
            line = pattern.sub(replacement, line)
        lines[line.strip()] += 1
    return lines


def check_stored(name: str, command: str, output: str) -> None:
    """``output`` (of ``command``) matches ``docs/examples/<name>``, or
    becomes it in update mode."""
    stored = OUTPUTS / name
    text = f"{command}\n{output}"
    if UPDATE:
        OUTPUTS.mkdir(exist_ok=True)
        stored.write_text(text)
        return
    assert stored.exists(), f"no stored output {stored}: run with ASYNCGW_UPDATE_EXAMPLES=1"
    expected, actual = normalise(stored.read_text()), normalise(text)
    missing, extra = expected - actual, actual - expected
    assert not missing and not extra, (
        f"{name} no longer matches its stored output (rerun with ASYNCGW_UPDATE_EXAMPLES=1 "
        f"if the change is meant)\nmissing: {sorted(missing)}\nnew: {sorted(extra)}"
    )


def command_line(script: str) -> str:
    return " ".join(["$ python", f"examples/{script}", *ARGS[script]])


@functools.cache
def run(script: str) -> str:
    """The output of ``script`` run with its :data:`ARGS` from the project's
    root, stderr (logs) merged into stdout in the order written."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *ARGS[script]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stdout
    return proc.stdout


def test_every_example_is_run() -> None:
    scripts = {path.name for path in EXAMPLES.glob("*.py")}
    assert scripts == set(ARGS)
    others = {path.name for path in EXAMPLES.iterdir() if path.suffix != ".py"}
    # The notebook is run by tests/test_notebook.py.
    assert {name for name in others if not name.startswith((".", "__"))} <= {"jupyter.ipynb"}


@pytest.mark.parametrize("script", sorted(ARGS))
def test_output_as_in_the_docs(script: str) -> None:
    check_stored(script.replace(".py", ".out"), command_line(script), run(script))


def test_quickstart() -> None:
    out = run("quickstart.py")
    assert "doubled remotely: 42" in out
    assert "summed by async remote code: 45" in out
    assert "remote error: json.decoder.JSONDecodeError" in out
    assert "<Gateway id='worker' receive-live" in out


def test_fanout() -> None:
    out = run("fanout.py")
    assert "2 gateways up" in out
    assert "asyncgw.sync.Executor" in out and "ProcessPoolExecutor" in out
    assert "results match local computation: True" in out


def test_the_fanout_shown_in_the_docs_beats_one_process_by_1_6x() -> None:
    # Issue 20's main job, as the docs show it: the stored output is a real
    # run (checked above, but for its figures); rerun it on a quiet machine
    # with ASYNCGW_UPDATE_EXAMPLES=1 if this fails.
    shown = (OUTPUTS / "fanout.out").read_text()
    assert shown.startswith("$ python examples/fanout.py 2\n")
    ours = re.search(r"asyncgw\.sync\.Executor\s+\S+s\s+(\d+\.\d+)x", shown)
    stdlib = re.search(r"ProcessPoolExecutor\s+\S+s\s+(\d+\.\d+)x", shown)
    assert ours and stdlib, shown
    assert float(ours.group(1)) >= 1.6, shown


def test_fleet() -> None:
    out = run("fleet.py")
    for host, share in (("node1", "alpha"), ("node2", "beta"), ("node4", "alpha")):
        assert f"{host}: share={share} -> ok" in out
    assert "node3: share=gamma -> failed (exit 1)" in out
    assert "pulled 4 logs: job on node1: 100000 bytes" in out
    assert "failed hosts: node3" in out
    assert "push, work, pull" in out and "pull logs" in out


def test_pipeline() -> None:
    out = run("pipeline.py")
    assert "pipeline done: 20 items, sum 2470, complete: True" in out
    assert "!! w2 died: killed by SIGKILL" in out
    assert "-> w2 made again on the restarted interpreter, redoing 10" in out
    for logger in ("asyncgw.remote.source.source", "asyncgw.remote.w1.worker"):
        assert logger in out  # forwarded, with host and pid
    assert "asyncgw.remote.w1.stdout" in out and "items so far" in out


def test_supervision() -> None:
    out = run("supervision.py")
    assert "signal SIGKILL, last stderr line 'worker: giving up'" in out
    assert "the new worker answers: 42" in out
    assert "restarted (restart 1 of 2) after: killed by SIGKILL" in out
