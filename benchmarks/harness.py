"""The machinery every benchmark in this directory shares.

A bench file holds its workloads; this module holds the rest:

- :class:`Result`, one table row: a metric per contender, every sample kept,
  medians and ranges computed from the samples only;
- :func:`measure` / :func:`measure_blocking`: contenders take turns, sample
  by sample, and who goes first rotates each round, so that drift on the
  machine spreads over all of them alike; warm-up rounds are dropped;
- :func:`fresh_python`: one sample in a fresh interpreter, its answer read
  from the last line of its stdout as JSON;
- :class:`Recorder`: the load average at the start and the end, the
  machine, the versions (Python, asyncgw's git commit, the peers'), and
  :meth:`Recorder.write`, which writes ``docs/_results/<name>.json``;
- plain-text rendering for the terminal (:func:`format_rows`), and
  :func:`reap_children`.

Invariants: a results file holds every sample, and every median, range,
ratio and "met" in it is computed here from those samples, never typed in.
The docs (``docs/_ext/results.py``) and ``tests/test_claims.py`` read these
files and nothing else. The file layout is described by :data:`SCHEMA`.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The layout version of a results file; bump it when a key changes meaning.
SCHEMA = 1
ROOT = Path(__file__).resolve().parent.parent
#: Where every benchmark writes its results file (``<name>.json``).
RESULTS_DIR = ROOT / "docs" / "_results"
EXIT_TIMEOUT = 10.0


# ---------------------------------------------------------------- one row


@dataclass
class Result:
    """One table row: a metric per contender, every sample kept."""

    workload: str
    unit: str
    higher_is_better: bool
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.samples.setdefault(name, []).append(value)

    def median(self, name: str) -> float | None:
        values = self.samples.get(name)
        return statistics.median(values) if values else None

    def spread(self, name: str) -> float | None:
        """Half the min-max range, relative to the median."""
        values = self.samples.get(name)
        if not values:
            return None
        middle = statistics.median(values)
        return (max(values) - min(values)) / 2 / middle if middle else 0.0

    def ratio(self, other: str, mine_name: str = "asyncgw") -> float | None:
        """``mine_name``'s median over ``other``'s (None if either is missing)."""
        mine, theirs = self.median(mine_name), self.median(other)
        if mine is None or not theirs:
            return None
        return mine / theirs

    def as_json(self) -> dict[str, Any]:
        names = [name for name, values in self.samples.items() if values]
        return {
            "workload": self.workload,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "median": {name: self.median(name) for name in names},
            "min": {name: min(self.samples[name]) for name in names},
            "max": {name: max(self.samples[name]) for name in names},
            "spread": {name: self.spread(name) for name in names},
            "samples": self.samples,
        }


@dataclass
class Target:
    """A goal on a ratio of medians: ``mine / peer`` at most (or at least) ``limit``."""

    name: str
    #: The row's workload, or the start of it (sizes may follow).
    workload: str
    mine: str
    peer: str
    limit: float
    at_most: bool = True
    note: str = ""

    def evaluate(self, results: Iterable[Result]) -> dict[str, Any]:
        row = next((r for r in results if r.workload.startswith(self.workload)), None)
        ratio = row.ratio(self.peer, mine_name=self.mine) if row else None
        met = (
            None
            if ratio is None
            else (ratio <= self.limit if self.at_most else ratio >= self.limit)
        )
        return {
            "name": self.name,
            "workload": self.workload,
            "mine": self.mine,
            "peer": self.peer,
            "limit": self.limit,
            "at_most": self.at_most,
            "ratio": ratio,
            "met": met,
            "note": self.note,
        }


# ---------------------------------------------------------------- taking turns

Sampler = Callable[[], Awaitable[float]]


async def measure(warmup: int, reps: int, samplers: dict[str, Sampler]) -> dict[str, list[float]]:
    """Seconds per sample for each contender, taking turns and rotating who
    goes first; the ``warmup`` first rounds are dropped."""
    order = list(samplers)
    samples: dict[str, list[float]] = {name: [] for name in order}
    for round_ in range(warmup + reps):
        shift = round_ % len(order)
        for name in order[shift:] + order[:shift]:
            elapsed = await samplers[name]()
            if round_ >= warmup:
                samples[name].append(elapsed)
    return samples


def measure_blocking(
    warmup: int, reps: int, samplers: dict[str, Callable[[], float]]
) -> dict[str, list[float]]:
    """:func:`measure` for blocking samplers."""

    async def run() -> dict[str, list[float]]:
        return await measure(warmup, reps, {k: blocking(v) for k, v in samplers.items()})

    return asyncio.run(run())


def blocking(function: Callable[[], float]) -> Sampler:
    """Run a blocking sample on the loop's thread (the loop idles meanwhile)."""

    async def sample() -> float:
        return function()

    return sample


def fresh_python(argv: Sequence[str], timeout: float, prefix: str = "") -> Any:
    """Run ``python argv...`` in a fresh interpreter and return the JSON on
    the last stdout line that starts with ``prefix``.

    :raises RuntimeError: on a non-zero exit or no such line (stderr quoted).
    """
    done = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(prefix)]
    if done.returncode or not lines:
        raise RuntimeError(f"{argv!r}: rc {done.returncode}: {done.stderr.strip()[-2000:]}")
    return json.loads(lines[-1][len(prefix) :])


def reap_children() -> list[str]:
    """Kill whatever child process is left (there should be none); their pids."""
    import psutil

    leftovers = psutil.Process().children(recursive=True)
    for child in leftovers:
        with suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(leftovers, timeout=EXIT_TIMEOUT)
    return [f"{child.pid}" for child in leftovers]


# ---------------------------------------------------------------- the record


def cpu_model() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """asyncgw's commit, with ``+dirty`` if the package's files differ from it."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "asyncgw"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


class Recorder:
    """One run of one benchmark: opened at the start (the load average then),
    written at the end (:meth:`write`)."""

    def __init__(self, name: str, peers: Sequence[str] = (), quick: bool = False) -> None:
        self.name = name
        self.peers = list(peers)
        self.quick = quick
        self.started = datetime.datetime.now(datetime.UTC)
        self.load_start = list(os.getloadavg())
        self.notes: list[str] = []
        self.reduced: str | None = None

    def document(
        self,
        results: Sequence[Result],
        targets: Sequence[Target] = (),
        config: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        import asyncgw

        return {
            "schema": SCHEMA,
            "bench": self.name,
            "date": self.started.isoformat(timespec="seconds"),
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "quick": self.quick,
            "reduced": self.reduced,
            "machine": {
                "cpus": os.cpu_count(),
                "model": cpu_model(),
                "platform": platform.platform(),
                "load_start": self.load_start,
                "load_end": list(os.getloadavg()),
            },
            "versions": {
                "python": platform.python_version(),
                "asyncgw": asyncgw.__version__,
                "asyncgw_commit": git_commit(),
                **{peer: version(peer) for peer in self.peers},
            },
            "config": config or {},
            "notes": self.notes,
            "results": [result.as_json() for result in results],
            "targets": [target.evaluate(results) for target in targets],
            "extra": extra or {},
        }

    def write(
        self,
        results: Sequence[Result],
        targets: Sequence[Target] = (),
        config: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        path: str | Path | None = None,
    ) -> Path:
        """Write the results file (default ``docs/_results/<name>.json``)."""
        target = Path(path) if path else RESULTS_DIR / f"{self.name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        document = self.document(results, targets, config, extra)
        target.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        print(f"results written to {target}", file=sys.stderr)
        return target


def render_targets(document: dict[str, Any]) -> list[str]:
    lines = []
    for t in document["targets"]:
        ratio = "-" if t["ratio"] is None else f"{t['ratio']:.2f}"
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        op = "<=" if t["at_most"] else ">="
        lines.append(
            f"{t['name']}: {t['mine']}/{t['peer']} {ratio} (target {op} {t['limit']}): {verdict}"
        )
    return lines


# ---------------------------------------------------------------- the terminal


def format_value(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_cell(result: Result, name: str) -> str:
    median, spread = result.median(name), result.spread(name)
    if median is None or spread is None:
        return "-"
    return f"{format_value(median)} ±{spread * 100:.0f}%"


def format_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}"


def format_rows(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table: the first column left-aligned, the others right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *map(line, rows)])


def render_results(
    results: Sequence[Result], contenders: Sequence[str], peers: Sequence[str]
) -> str:
    """The usual table: median ±range per contender, then asyncgw/peer ratios."""
    header = ["workload", "unit", "better", *contenders, *(f"agw/{p}" for p in peers)]
    rows = [
        [
            r.workload,
            r.unit,
            "higher" if r.higher_is_better else "lower",
            *(format_cell(r, name) for name in contenders),
            *(format_ratio(r.ratio(p)) for p in peers),
        ]
        for r in results
    ]
    return format_rows(header, rows)
