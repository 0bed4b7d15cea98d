"""Every figure and every performance claim in the docs comes from a results file.

What is checked, in ``docs/*.rst``, ``docs/howto/*.rst``, ``README.md`` and
``CHANGELOG.md``:

- every ``:result:``, ``:ratio:``, ``:target:`` and ``:field:`` role and every
  ``results-*`` / ``headline-chart`` directive resolves against
  ``docs/_results/*.json`` (the docs extension renders them from there, so a
  figure shown that way cannot be typed by hand);
- every other figure in prose (a number with µs, ms, s, MB/s, MiB/s, × or x)
  and every claim word ("met", "ahead", "faster", "every row", "beats",
  "outperforms") is a line listed in :data:`ALLOWED`, with the reason it is
  not a measurement (a setting, an example's output, a workload's size) or
  is a sentence whose figures are roles. Editing such a line by hand (a
  figure changed, a claim added) makes it unlisted, and this test fails;
- every "met" or "MISSED" a results file states is recomputed from its
  samples (:func:`test_results_files_agree_with_their_samples`).

Code blocks, literal blocks, inline literals and comments are not prose and
are not scanned: they show commands and outputs, not claims.
"""

from __future__ import annotations

import importlib.util
import json
import re
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "_results"
FIGURE = re.compile(
    r"(?<![\w.])\d[\d,\u202f]*(?:\.\d+)?(?:\s*(?:–|-|to|→|->)\s*\d[\d,]*(?:\.\d+)?)?"
    r"\s?(?:µs|us|ms|s|MB/s|MiB/s|GiB/s|×|x)(?![\w/])"
)
CLAIM = re.compile(r"\b(met|ahead|faster|every row|beats?|outperform\w*)\b", re.IGNORECASE)
ROLE = re.compile(r":(result|ratio|target|field):`([^`]+)`", re.DOTALL)
ANY_ROLE = re.compile(r":[\w:+-]+:`[^`]*`", re.DOTALL)
RESULTS_DIRECTIVE = re.compile(r"^\s*\.\. (results-table|results-targets|results-chart)::\s*(\S+)")
#: Directives whose body is not prose.
SKIPPED_DIRECTIVES = re.compile(
    r"^\s*\.\. (code-block|code|sourcecode|literalinclude|results-[\w-]+|headline-chart|image"
    r"|figure|raw|toctree|automodule|autoclass|autofunction|tab)::"
)

#: (file, line as it stands, stripped) -> why it is not a figure to check.
#: Reasons: "setting" (a documented default, timeout or limit, not a
#: measurement), "design" (a behaviour, not a measured comparison),
#: "roles" (its figures are roles, rendered from the results files).
ALLOWED: dict[tuple[str, str], str] = {
    (
        "docs/architecture.rst",
        "waits for cannot come before its request is written). A frame queued 50 µs",
    ): "setting: the router's quiet spell (QUIET_NS)",
    (
        "docs/architecture.rst",
        "thread reads, and a tick on the loop every 2 ms takes the duty back once",
    ): "setting: the pipe reader's tick (TICK)",
    (
        "docs/architecture.rst",
        "a large part of a call. A watchdog thread, polling every 2 ms while",
    ): "setting: the watchdog's poll interval",
    (
        "docs/architecture.rst",
        "keeps reading ahead while the receiver uses one. Sync remote code runs on a",
    ): "design: 'reading ahead' is a behaviour, not a comparison",
    (
        "docs/architecture.rst",
        "DESIGN.md rule 5 lets the facade's hot paths use a faster hand-off than a",
    ): "design: what DESIGN.md allows, not a measurement",
    (
        "docs/architecture.rst",
        "``timeout`` seconds, the worker's process group gets ``SIGTERM`` and, 0.2 s",
    ): "setting: the grace before SIGKILL",
    (
        "docs/benchmarks.rst",
        "whether each is met, the machine (cpus, model, the load average at the start",
    ): "design: what a results file holds",
    (
        "docs/benchmarks.rst",
        "Targets, and what bounds the ones not met",
    ): "design: a heading; the verdicts are results-targets tables",
    (
        "docs/benchmarks.rst",
        'Each target is a ratio of medians from the run above; "met" and "MISSED"',
    ): "design: how verdicts are computed",
    (
        "docs/benchmarks.rst",
        "The targets: within 1.1× of the floor, ahead of parallel-ssh and fabric on",
    ): "setting: the targets themselves (bench_fleet.target_list); verdicts: results-targets",
    (
        "docs/index.rst",
        "1 means asyncgw is faster. The chart is drawn from the benchmarks' results",
    ): "design: how to read the headline chart (its figures come from the results)",
    (
        "docs/howto/parallel-map.rst",
        "met, never by the wire itself: a far side without numpy runs",
    ): "design: 'met' as in 'come across' (an array arriving), not a target",
    (
        "docs/cli.rst",
        "of 2 s. A third Ctrl-C quits at once, leaving such commands running.",
    ): "setting: the CLI's grace period",
    ("docs/fleet.rst", "``connect_timeout`` (30 s) and ``kill_grace`` (2 s)."): "setting: defaults",
    (
        "docs/forwarding.rst",
        "sends batches; it sends at most two batches ahead of what the local side",
    ): "design: a window of two batches",
    (
        "docs/forwarding.rst",
        "0.5 ms, and the tasks of all gateways take at most 10 % of the event",
    ): "setting: slice length (SHARE)",
    (
        "docs/forwarding.rst",
        "switch interval (5 ms); that slows every channel of that interpreter,",
    ): "setting: CPython's default switch interval",
    (
        "docs/forwarding.rst",
        "what it still holds (partial lines included, for up to 2 s) before it",
    ): "setting: a drain timeout",
    (
        "docs/forwarding.rst",
        "- The remote waits up to 60 s for an answer; imports are served one at a",
    ): "setting: a timeout",
    (
        "docs/objects.rst",
        "fetches items in batches of 1000, one batch ahead: a stream of any length",
    ): "design: batch prefetch",
    (
        "docs/objects.rst",
        "on the remote worker's reader thread, inline; one that runs past 2 ms has",
    ): "setting: the watchdog's threshold",
    (
        "docs/transports.rst",
        "``--handshake-timeout`` (10 s) from the connection's arrival, however",
    ): "setting: a default",
    (
        "docs/transports.rst",
        "client's ``connect_timeout`` (30 s) likewise covers connecting, TLS",
    ): "setting: a default",
    (
        "docs/howto/parallel-map.rst",
        "chunks aim at 20 ms of remote work each, from what the far side reports",
    ): "setting: the chunking goal",
    (
        "docs/howto/parallel-map.rst",
        "have come back, a chunk carries at least 1 ms of work, so the last",
    ): "setting: the smallest chunk (chunking.MIN_SECONDS)",
    (
        "docs/howto/socket-server.rst",
        "most 10 s; more are closed as they arrive. An admitted client gets a",
    ): "setting: a timeout",
    (
        "CHANGELOG.md",
        "deadline (`--handshake-timeout`, 10 s) instead of one per read,",
    ): "setting: a default",
    (
        "CHANGELOG.md",
        "past 2 ms. A forwarded import from a remote object's method works (the",
    ): "setting: the watchdog's threshold",
    (
        "CHANGELOG.md",
        "pytest plugins ahead, so pytest rewrites their assertions as with plain",
    ): "design: 'imports ahead' is a behaviour",
    (
        "CHANGELOG.md",
        "interrupts code still running after 5 s. `join()` waits.",
    ): "setting: exit's grace",
}


def sources() -> list[Path]:
    found = sorted((ROOT / "docs").glob("*.rst")) + sorted((ROOT / "docs" / "howto").glob("*.rst"))
    return [*found, ROOT / "README.md", ROOT / "CHANGELOG.md"]


def results_extension() -> ModuleType:
    path = ROOT / "docs" / "_ext" / "results.py"
    spec = importlib.util.spec_from_file_location("asyncgw_docs_results", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def prose_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of the prose of a file: no code, literals, comments."""
    lines = path.read_text(encoding="utf-8").splitlines()
    markdown = path.suffix == ".md"
    skip_indent: int | None = None
    fenced = False
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if markdown:
            if stripped.startswith("```"):
                fenced = not fenced
                continue
            if fenced or line.startswith("    "):
                continue
            yield number, line
            continue
        if skip_indent is not None:
            if not stripped or indent > skip_indent:
                continue
            skip_indent = None
        if SKIPPED_DIRECTIVES.match(line) or (
            stripped.startswith("..") and "::" not in stripped  # a comment
        ):
            skip_indent = indent
            continue
        if stripped.endswith("::") and not stripped.startswith(".."):
            skip_indent = indent  # a literal block follows
            yield number, line[: line.rindex("::")]
            continue
        yield number, line


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def roles_in(path: Path) -> list[tuple[str, str]]:
    text = "\n".join(line for _, line in prose_lines(path))
    return [(m.group(1), m.group(2)) for m in ROLE.finditer(text)]


def unlisted(path: Path) -> list[str]:
    """Prose lines of ``path`` with a figure or claim that :data:`ALLOWED` lacks."""
    found = []
    for number, line in prose_lines(path):
        bare = ANY_ROLE.sub("", re.sub(r"``[^`]*``|`[^`]*`_?", "", line))
        if not (FIGURE.search(bare) or CLAIM.search(bare)):
            continue
        key = (relative(path), line.strip())
        if key not in ALLOWED:
            found.append(f"{relative(path)}:{number}: {line.strip()}")
    return found


@pytest.mark.parametrize("path", sources(), ids=relative)
def test_every_figure_comes_from_a_results_file(path: Path) -> None:
    """A figure or claim in prose is a role (rendered from the results) or
    a listed non-measurement; anything else was typed by hand."""
    found = unlisted(path)
    assert not found, (
        "figures or performance claims not taken from docs/_results/*.json: use the "
        ":result:/:ratio:/:target: roles or a results directive (docs/_ext/results.py), "
        "or remove the claim:\n" + "\n".join(found)
    )


@pytest.mark.parametrize("path", sources(), ids=relative)
def test_every_role_and_directive_resolves(path: Path) -> None:
    """The figures shown through roles and directives exist in the results."""
    roles = roles_in(path)
    if roles:
        extension = results_extension()
        for name, spec in roles:
            extension.render_role(name, spec)  # raises ResultsError if it does not resolve
    if path.suffix == ".rst":
        for line in path.read_text(encoding="utf-8").splitlines():
            match = RESULTS_DIRECTIVE.match(line)
            if match:
                assert (RESULTS / f"{match.group(2)}.json").is_file(), line


def harness_files() -> list[Path]:
    return [
        path
        for path in sorted(RESULTS.glob("*.json"))
        if json.loads(path.read_text(encoding="utf-8")).get("schema") == 1
    ]


@pytest.mark.parametrize("path", harness_files(), ids=lambda p: p.name)
def test_results_files_agree_with_their_samples(path: Path) -> None:
    """Medians, ranges and every target's verdict follow from the samples."""
    document = json.loads(path.read_text(encoding="utf-8"))
    for key in ("date", "machine", "versions", "results", "targets"):
        assert key in document, key
    for key in ("cpus", "model", "load_start", "load_end"):
        assert key in document["machine"], key
    assert document["versions"].get("python") and "asyncgw_commit" in document["versions"]
    rows = {row["workload"]: row for row in document["results"]}
    for row in document["results"]:
        for name, samples in row["samples"].items():
            if samples:
                assert row["median"][name] == pytest.approx(statistics.median(samples))
                assert row["min"][name] == min(samples) and row["max"][name] == max(samples)
    for target in document["targets"]:
        row = next((r for w, r in rows.items() if w.startswith(target["workload"])), None)
        if (
            row is None
            or not row["samples"].get(target["mine"])
            or not row["samples"].get(target["peer"])
        ):
            assert target["met"] is None, target
            continue
        ratio = statistics.median(row["samples"][target["mine"]]) / statistics.median(
            row["samples"][target["peer"]]
        )
        assert target["ratio"] == pytest.approx(ratio)
        met = ratio <= target["limit"] if target["at_most"] else ratio >= target["limit"]
        assert target["met"] is met, target
