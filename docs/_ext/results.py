"""Tables, charts and inline figures made from the benchmark results files.

Every benchmark in ``benchmarks/`` writes ``docs/_results/<name>.json``
(``benchmarks/harness.py``: every sample, the medians and ranges, the
targets, the machine, the load average, the versions). This extension reads
those files when the docs are built, so that no figure on a page is typed
by hand. A reference that does not resolve (a file, a row, a contender or a
target that the results do not have) is a build warning, so ``-W`` fails.

Directives (``<bench>`` is a results file's name, e.g. ``core``; a row is
named by its workload or the start of it, one per line)::

    .. results-table:: core
       :rows: 1 popen gateway
              round trip
       :contenders: asyncgw, sync, execnet, bound
       :ratios: asyncgw/execnet, sync/execnet
       :transpose:            (a line per contender; no ratios)

    .. results-targets:: core

    .. results-chart:: core
       :rows: round trip
       :contenders: asyncgw, sync, execnet
       :kind: bars          (medians with min-max bars; or: ratio, lines)
       :peer: execnet       (kind ratio: every contender over this one)
       :series: gateways: start+rt+exit   (kind lines: rows "<N> <series>")
       :alt: text for screen readers

    .. headline-chart::
       :items: core | 8 popen gateways | asyncgw/execnet | start 8 gateways
               objects | method held | asyncgw/rpyc | a method call, one round trip each

The headline chart draws, for each item, asyncgw's time as a fraction of the
peer's (a rate's ratio is inverted so that below 1 always means asyncgw is
faster), with the file's date and load average under it. Without
``:items:`` it draws :data:`HEADLINE`.

Roles, for figures in prose::

    :result:`core | round trip | asyncgw`        -> 32.0 µs
    :ratio:`core | round trip | asyncgw/execnet`  -> 0.61×
    :target:`core | round trip, async API`        -> met (0.61×, target ≤ 0.8×)
    :field:`execnet_suite | counts.passed`        -> a value of any results file
                                                     (``date`` gives the day)

Every table and chart says where it comes from: the file, its date, the
commit, the machine, the load average at the start and the end, the number
of samples, and whether the run was a quick or reduced one; the file's notes
(setups that differ between contenders) are printed next to it.

Charts are PNGs drawn with matplotlib (Agg) into ``docs/_results/_charts``
(ignored by git and excluded from the sources); they are redrawn on every
build.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective, SphinxRole

LOG = logging.getLogger(__name__)
RESULTS = Path(__file__).resolve().parent.parent / "_results"
#: Charts are drawn here, under the docs' source directory (ignored by git).
CHARTS_DIR = "_results/_charts"
UNITS = {"us": "µs", "us/msg": "µs", "cpu us": "cpu µs", "cpu us/item": "cpu µs/item"}
#: The front page's default: (bench, row, mine/peer, label).
HEADLINE = (
    ("core", "8 popen gateways", "asyncgw/execnet", "start 8 popen gateways (vs execnet)"),
    ("core", "round trip", "asyncgw/execnet", "round trip, popen (vs execnet)"),
    ("core", "one-way small ints", "asyncgw/execnet", "one-way small messages (vs execnet)"),
    ("ssh", "1 ssh gateway", "asyncgw/execnet", "start 1 ssh gateway (vs execnet)"),
    ("objects", "method held", "asyncgw/rpyc", "remote method call, 1 round trip (vs rpyc)"),
    ("fleet", "hostname, fresh", "asyncgw/parallel-ssh", "hostname on 32 hosts (vs parallel-ssh)"),
    ("executor", "pool start+stop", "asyncgw/ProcessPoolExecutor",
     "pool start+stop (vs ProcessPoolExecutor)"),
)  # fmt: skip


class ResultsError(Exception):
    """A reference the results files cannot answer."""


# ---------------------------------------------------------------- reading


def load(bench: str) -> dict[str, Any]:
    path = RESULTS / f"{bench}.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ResultsError(f"no results file docs/_results/{bench}.json") from None


def find_row(document: dict[str, Any], name: str) -> dict[str, Any]:
    """The first row whose workload is ``name`` or starts with it."""
    name = name.strip()
    rows = document["results"]
    for row in rows:
        if row["workload"] == name:
            return dict(row)
    for row in rows:
        if row["workload"].startswith(name):
            return dict(row)
    raise ResultsError(f"{document['bench']}.json has no row {name!r}")


def median(row: dict[str, Any], contender: str) -> float:
    samples = row["samples"].get(contender)
    if not samples:
        raise ResultsError(f"row {row['workload']!r} has no samples of {contender!r}")
    return float(statistics.median(samples))


def ratio(row: dict[str, Any], pair: str) -> float:
    mine, _, peer = pair.partition("/")
    return median(row, mine.strip()) / median(row, peer.strip())


def find_target(document: dict[str, Any], name: str) -> dict[str, Any]:
    for target in document["targets"]:
        if target["name"] == name.strip():
            return dict(target)
    raise ResultsError(f"{document['bench']}.json has no target {name!r}")


def unit(row: dict[str, Any]) -> str:
    return UNITS.get(row["unit"], row["unit"])


def figure(value: float) -> str:
    """A median as printed: three significant figures, thousands spaced."""
    if abs(value) >= 1000:
        return f"{value:,.0f}".replace(",", "\u202f")
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_ratio(value: float) -> str:
    """``0.53×``; below 0.1, two significant figures (``0.00067×``, not ``0.00×``)."""
    if abs(value) < 0.1:
        return f"{value:.2g}×"
    return f"{value:.2f}×"


def spread(values: list[float]) -> str:
    """A cell: the median, and the lowest–highest sample where there are several."""
    middle = figure(statistics.median(values))
    low, high = figure(min(values)), figure(max(values))
    if len(values) == 1 or low == high:
        return middle
    return f"{middle} ({low}–{high})"


def unit_cell(row: dict[str, Any]) -> str:
    """The unit with an arrow: ↓ lower is better, ↑ higher is better (:data:`LEGEND`)."""
    return f"{unit(row)} {'↑' if row['higher_is_better'] else '↓'}"


#: Printed under every table with a unit column.
LEGEND = "↓: lower is better; ↑: higher is better."


def format_result(document: dict[str, Any], spec: str) -> str:
    """``row | contender`` -> ``"32.0 µs"``."""
    row_name, contender = split(spec, 2)
    row = find_row(document, row_name)
    return f"{figure(median(row, contender))} {unit(row)}"


def format_target(target: dict[str, Any]) -> str:
    if target["met"] is None:
        return "not measured"
    op = "≤" if target["at_most"] else "≥"
    verdict = "met" if target["met"] else "missed"
    return f"{verdict} ({target['ratio']:.2f}×, target {op} {target['limit']:.3g}×)"


def split(spec: str, count: int) -> list[str]:
    parts = [part.strip() for part in spec.split("|")]
    if len(parts) != count or not all(parts):
        raise ResultsError(f"expected {count} parts separated by '|': {spec!r}")
    return parts


def provenance(document: dict[str, Any]) -> str:
    """Where a table or chart comes from, in one sentence (or two)."""
    machine, versions = document["machine"], document["versions"]
    counts = sorted({len(s) for row in document["results"] for s in row["samples"].values()})
    samples = "–".join(str(n) for n in (counts[0], counts[-1])) if counts else "0"
    if len(counts) == 1:
        samples = str(counts[0])
    plural = "" if samples == "1" else "s"
    run = "a quick run" if document.get("quick") else "a full run"
    if document.get("reduced"):
        run = "a reduced run"
    sha, _, dirty = (versions.get("asyncgw_commit") or "?").partition("+")
    # "+dirty": the package's files differed from the commit (a shared working tree)
    commit = sha[:12] + (" with uncommitted changes" if dirty else "")
    load_start = machine["load_start"][0]
    load_end = machine["load_end"][0]
    text = (
        f"From docs/_results/{document['bench']}.json: {run} on {document['date'][:10]}, "
        f"asyncgw at {commit}, Python {versions['python']}, {machine['cpus']} × "
        f"{machine['model']}; load average {load_start:.2f} at the start, {load_end:.2f} at "
        f"the end (a shared machine). Medians of {samples} sample{plural} per cell"
    )
    text += "." if samples == "1" else "; the range is the lowest and highest sample."
    if document.get("reduced"):
        text += f" Reduced: {document['reduced']}."
    return text


# ---------------------------------------------------------------- nodes


def paragraph(text: str, classes: tuple[str, ...] = ()) -> nodes.paragraph:
    para = nodes.paragraph(text=text)
    para["classes"] += list(classes)
    return para


def table(header: list[str], rows: list[list[str]], classes: tuple[str, ...] = ()) -> nodes.table:
    tbl = nodes.table(classes=["results-table", *classes])
    group = nodes.tgroup(cols=len(header))
    tbl += group
    for _ in header:
        group += nodes.colspec(colwidth=1)
    head = nodes.thead()
    group += head
    body = nodes.tbody()
    group += body
    for target, cells in ((head, [header]), (body, rows)):
        for cells_ in cells:
            line = nodes.row()
            for cell in cells_:
                entry = nodes.entry()
                entry += nodes.paragraph(text=cell)
                line += entry
            target += line
    return tbl


def lines_option(argument: str) -> list[str]:
    return [line.strip() for line in argument.splitlines() if line.strip()]


def comma_option(argument: str) -> list[str]:
    return [part.strip() for part in argument.split(",") if part.strip()]


class ResultsDirective(SphinxDirective):
    """The common part: the file, its notes, and warnings for bad references."""

    required_arguments = 1
    has_content = False

    def document(self) -> dict[str, Any]:
        bench = self.arguments[0]
        self.env.note_dependency(str(RESULTS / f"{bench}.json"))
        return load(bench)

    def run(self) -> list[nodes.Node]:
        try:
            return self.build()
        except (ResultsError, KeyError) as failure:
            LOG.warning(f"{self.name}: {failure}", location=self.get_location())
            return []

    def build(self) -> list[nodes.Node]:
        raise NotImplementedError

    def footer(self, document: dict[str, Any], legend: bool = False) -> list[nodes.Node]:
        """The source (in full the first time a page shows this file, then
        shortly) and the file's notes, every time: a setup that differs
        between contenders is said next to each figure."""
        bench = document["bench"]
        shown = self.env.temp_data.setdefault("results_shown", set())
        # The figure just before this one on the page came from the same file:
        # its source and setups are printed right above.
        follows = self.env.temp_data.get("results_last") == bench
        self.env.temp_data["results_last"] = bench
        source = provenance(document)
        if follows:
            source = f"From docs/_results/{bench}.json: the run and setups described above."
        elif bench in shown:
            source = f"From docs/_results/{bench}.json, the run described above."
        shown.add(bench)
        if legend:
            source = f"{LEGEND} {source}"
        found: list[nodes.Node] = [paragraph(source, ("results-source",))]
        notes = document.get("notes", [])
        if notes and not follows:
            found.append(paragraph("Setups differ: " + " ".join(notes), ("results-note",)))
        return found

    def rows(self, document: dict[str, Any]) -> list[dict[str, Any]]:
        names = self.options.get("rows")
        if not names:
            hidden = set(document.get("extra", {}).get("cpu_rows", []))
            return [row for row in document["results"] if row["workload"] not in hidden]
        return [find_row(document, name) for name in names]

    def contenders(self, rows: list[dict[str, Any]]) -> list[str]:
        chosen = self.options.get("contenders")
        if chosen:
            return list(chosen)
        found: list[str] = []
        for row in rows:
            found.extend(name for name in row["samples"] if name not in found)
        return found


class ResultsTable(ResultsDirective):
    """Medians (lowest–highest) per contender, and the ratios asked for."""

    option_spec: ClassVar[dict[str, Any]] = {
        "rows": lines_option,
        "contenders": comma_option,
        "ratios": comma_option,
        "transpose": directives.flag,
    }

    def build(self) -> list[nodes.Node]:
        document = self.document()
        rows = self.rows(document)
        contenders = self.contenders(rows)
        if "transpose" in self.options:
            return [self.transposed(rows, contenders), *self.footer(document, legend=True)]
        ratios = self.options.get("ratios", [])
        header = ["", "unit", *contenders, *(pair.replace("/", " ÷ ") for pair in ratios)]
        body = []
        for row in rows:
            cells = [row["workload"], unit_cell(row)]
            for name in contenders:
                values = row["samples"].get(name)
                cells.append(spread(values) if values else "–")
            for pair in ratios:
                try:
                    cells.append(format_ratio(ratio(row, pair)))
                except ResultsError:
                    cells.append("–")
            body.append(cells)
        return [table(header, body), *self.footer(document, legend=True)]

    def transposed(self, rows: list[dict[str, Any]], contenders: list[str]) -> nodes.table:
        """A line per contender, a column per row (for rows with many contenders)."""
        header = ["", *(f"{row['workload']}, {unit_cell(row)}" for row in rows)]
        body = []
        for name in contenders:
            cells = [name]
            for row in rows:
                values = row["samples"].get(name)
                cells.append(spread(values) if values else "–")
            body.append(cells)
        return table(header, body)


class ResultsTargets(ResultsDirective):
    """Each target of the file: goal, measured ratio, met or missed."""

    option_spec: ClassVar[dict[str, Any]] = {"names": lines_option}

    def build(self) -> list[nodes.Node]:
        document = self.document()
        names = self.options.get("names")
        targets = [find_target(document, n) for n in names] if names else document["targets"]
        body = []
        for target in targets:
            op = "≤" if target["at_most"] else "≥"
            measured = "–" if target["ratio"] is None else format_ratio(target["ratio"])
            verdict = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
            # The verdict first after the name: on a phone the rest scrolls.
            cells = [
                target["name"],
                verdict,
                measured,
                f"{target['mine']} ÷ {target['peer']} {op} {target['limit']:.3g}×",
                target.get("note") or "",
            ]
            body.append(cells)
        header = ["target", "verdict", "measured", "goal", "note"]
        if not any(cells[-1] for cells in body):
            header.pop()
            body = [cells[:-1] for cells in body]
        return [table(header, body, ("results-targets",)), *self.footer(document)]


# ---------------------------------------------------------------- charts


def chart_path(srcdir: str | Path, key: str) -> tuple[Path, str]:
    """Where a chart goes (under the source tree, so Sphinx copies it) and its URI."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    charts = Path(srcdir) / CHARTS_DIR
    charts.mkdir(parents=True, exist_ok=True)
    return charts / f"{digest}.png", f"/{CHARTS_DIR}/{digest}.png"


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: Charts are drawn this wide (inches at 110 dpi: about 570 CSS px) with
#: 11-point text, and shown at that width or the column's, whichever is less:
#: on a 390 px phone the text is still about 10 px high. PNGs are saved at
#: twice that resolution, for sharp text on high-density screens.
WIDTH = 5.2
DPI = 110
FONT = 11


def pyplot_styled() -> Any:
    plt = pyplot()
    plt.rcParams.update(
        {
            "font.size": FONT,
            "axes.titlesize": FONT,
            "axes.labelsize": FONT - 1,
            "xtick.labelsize": FONT - 1,
            "ytick.labelsize": FONT - 1,
            "legend.fontsize": FONT - 1,
        }
    )
    return plt


def save(fig: Any, path: Path) -> str:
    """Write the PNG; returns its CSS width."""
    fig.tight_layout()
    width = round(fig.get_figwidth() * DPI)
    fig.savefig(path, dpi=2 * DPI, metadata={"Software": None})
    pyplot().close(fig)
    return f"{width}px"


def image(uri: str, alt: str, width: str) -> nodes.image:
    """The chart at its CSS width (``max-width: 100%`` in custom.css on narrower
    columns), as a link to the full-size PNG."""
    node = nodes.image(uri=uri, alt=alt, width=width, classes=["results-chart"])
    return node


class ResultsChart(ResultsDirective):
    """A PNG drawn from a results file: bars, ratios, or lines over sizes."""

    option_spec: ClassVar[dict[str, Any]] = {
        "rows": lines_option,
        "contenders": comma_option,
        "kind": lambda a: directives.choice(a, ("bars", "ratio", "lines")),
        "peer": directives.unchanged,
        "series": lines_option,
        "alt": directives.unchanged,
        "title": directives.unchanged,
    }

    def build(self) -> list[nodes.Node]:
        document = self.document()
        kind = self.options.get("kind", "bars")
        key = json.dumps([document["date"], self.arguments, sorted(self.options.items())])
        path, uri = chart_path(self.env.srcdir, key)
        plt = pyplot_styled()
        fig = self.lines(plt, document) if kind == "lines" else self.bars(plt, document, kind)
        width = save(fig, path)
        alt = self.options.get("alt", f"chart of {document['bench']}.json")
        return [image(uri, alt, width), *self.footer(document)]

    def bars(self, plt: Any, document: dict[str, Any], kind: str) -> Any:
        rows = self.rows(document)
        contenders = self.contenders(rows)
        peer = self.options.get("peer")
        if kind == "ratio" and not peer:
            raise ResultsError("kind ratio needs :peer:")
        heights = [1.0 + 0.38 * len([n for n in contenders if r["samples"].get(n)]) for r in rows]
        fig, axes = plt.subplots(
            len(rows),
            1,
            figsize=(WIDTH, 0.3 + sum(heights)),
            squeeze=False,
            gridspec_kw={"height_ratios": heights},
        )
        for ax, row in zip(axes[:, 0], rows, strict=True):
            names = [n for n in contenders if row["samples"].get(n)]
            if kind == "ratio":
                base = median(row, peer or "")
                values = [median(row, n) / base for n in names]
                low = [min(row["samples"][n]) / base for n in names]
                high = [max(row["samples"][n]) / base for n in names]
                ax.axvline(1.0, color="grey", linewidth=0.8)
                better = "higher" if row["higher_is_better"] else "lower"
                ax.set_xlabel(f"÷ {peer}'s median ({better} is better)", loc="right")
            else:
                values = [median(row, n) for n in names]
                low = [min(row["samples"][n]) for n in names]
                high = [max(row["samples"][n]) for n in names]
                better = "higher" if row["higher_is_better"] else "lower"
                ax.set_xlabel(f"{unit(row)} ({better} is better)", loc="right")
            errors = [
                [v - lo for v, lo in zip(values, low, strict=True)],
                [hi - v for v, hi in zip(values, high, strict=True)],
            ]
            colors = ["#2f6fb0" if n.startswith(("asyncgw", "sync")) else "#9a9a9a" for n in names]
            ax.barh(names, values, xerr=errors, color=colors, capsize=3)
            ax.invert_yaxis()
            ax.set_title(row["workload"], loc="left", fontweight="bold")
        return fig

    def lines(self, plt: Any, document: dict[str, Any]) -> Any:
        series = self.options.get("series")
        if not series:
            raise ResultsError("kind lines needs :series:")
        # One above the other: side by side, they are unreadable on a phone.
        fig, axes = plt.subplots(len(series), 1, figsize=(WIDTH, 3.6 * len(series)), squeeze=False)
        for ax, name in zip(axes[:, 0], series, strict=True):
            # rows named "<N> <series>", e.g. "128 gateways: start+rt+exit"
            points: dict[str, list[tuple[int, float]]] = {}
            found = None
            for row in document["results"]:
                size, _, rest = row["workload"].partition(" ")
                if rest != name or not size.isdigit():
                    continue
                found = row
                for contender, samples in row["samples"].items():
                    if samples and contender in self.options.get("contenders", row["samples"]):
                        points.setdefault(contender, []).append(
                            (int(size), float(statistics.median(samples)))
                        )
            if found is None:
                raise ResultsError(f"{document['bench']}.json has no rows '<N> {name}'")
            for contender, xy in points.items():
                xy.sort()
                style = "-" if contender.startswith("asyncgw") else "--"
                ax.plot([x for x, _ in xy], [y for _, y in xy], style, marker="o", label=contender)
            ax.set_xscale("log")
            ax.set_yscale("log")
            sizes = sorted({x for xy in points.values() for x, _ in xy})
            ax.set_xticks(sizes, [f"{x:,}".replace(",", "\u202f") for x in sizes])
            ax.minorticks_off()
            ax.set_title(name, loc="left", fontweight="bold")
            ax.set_xlabel(f"number of {name.split(':')[0]} (log scale)")
            ax.set_ylabel(f"{unit(found)}, median (log scale)")
            ax.legend()
        return fig


def headline_items(argument: str) -> list[tuple[str, str, str, str]]:
    return [tuple(split(line, 4)) for line in lines_option(argument)]  # type: ignore[misc]


class HeadlineChart(SphinxDirective):
    """asyncgw's time as a fraction of each peer's, over several results files."""

    has_content = False
    option_spec: ClassVar[dict[str, Any]] = {"items": headline_items, "alt": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        items = self.options.get("items") or list(HEADLINE)
        labels, values, sources = [], [], {}
        try:
            for bench, row_name, pair, label in items:
                document = load(bench)
                self.env.note_dependency(str(RESULTS / f"{bench}.json"))
                row = find_row(document, row_name)
                value = ratio(row, pair)
                if row["higher_is_better"]:
                    value = 1 / value  # a rate: the time for the same work
                labels.append(label)
                values.append(value)
                sources[bench] = document
        except (ResultsError, KeyError) as failure:
            LOG.warning(f"headline-chart: {failure}", location=self.get_location())
            return []
        plt = pyplot_styled()
        path, uri = chart_path(
            self.env.srcdir, json.dumps([items, [d["date"] for d in sources.values()]])
        )
        # Each label above its bar, so that the bars have the whole width
        # (labels beside them leave the bars a sliver on a phone).
        fig, ax = plt.subplots(figsize=(WIDTH, 0.8 + 0.62 * len(labels)))
        colors = ["#2f6fb0" if v <= 1 else "#c0504d" for v in values]
        positions = list(range(len(labels)))
        ax.barh(positions, values, height=0.42, color=colors)
        ax.axvline(1.0, color="grey", linewidth=0.8)
        for y, (label, v) in enumerate(zip(labels, values, strict=True)):
            ax.text(
                0, y - 0.27, label, va="bottom", ha="left", zorder=3,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6},
            )  # fmt: skip
            ax.text(v, y, f" {format_ratio(v)}", va="center", fontweight="bold")
        ax.set_yticks([])
        ax.set_ylim(len(labels) - 0.5, -0.85)
        for side in ("left", "right", "top"):
            ax.spines[side].set_visible(False)
        ax.set_xlabel("asyncgw's time ÷ the peer's (median)\nbelow 1: asyncgw is faster")
        ax.set_xlim(0, max(1.2, max(values) * 1.22))
        width = save(fig, path)
        alt = self.options.get("alt", "asyncgw's time as a fraction of its peers', per workload")
        when = ", ".join(
            f"{bench} {d['date'][:10]} (load {d['machine']['load_start'][0]:.1f}"
            f"→{d['machine']['load_end'][0]:.1f})"
            for bench, d in sources.items()
        )
        text = (
            f"Generated from docs/_results/*.json when these docs were built: {when}; "
            f"a 2-core shared machine, quick runs where the file says so."
        )
        found: list[nodes.Node] = [image(uri, alt, width), paragraph(text, ("results-source",))]
        # Where the setups differ, say so here, beside the figure.
        differ = nodes.bullet_list(classes=["results-note"])
        for bench, document in sources.items():
            notes = document.get("notes", [])
            if notes:
                rows = "; ".join(label for b, _, _, label in items if b == bench)
                item = nodes.list_item()
                item += paragraph(f"{rows} — " + " ".join(notes))
                differ += item
        if len(differ):
            found.append(paragraph("The setups differ between contenders:", ("results-note",)))
            found.append(differ)
        return found


class ExecnetExpected(SphinxDirective):
    """The gate's expected failures of execnet's suite, from
    ``docs/_results/execnet_suite.json`` (written by
    ``tests/peers/execnet_suite.py`` from ``tests/peers/execnet_expected.toml``):
    each entry's reason, why, its tests and how many failed in that run."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        self.env.note_dependency(str(RESULTS / "execnet_suite.json"))
        try:
            document = load("execnet_suite")
            entries = document["expected"]
        except (ResultsError, KeyError) as failure:
            LOG.warning(f"execnet-expected: {failure}", location=self.get_location())
            return []
        body = [
            [entry["reason"], entry["why"], ", ".join(entry["tests"]), str(entry["failed"])]
            for entry in entries
        ]
        header = ["reason", "why", "execnet's tests", "failed"]
        counts = document["counts"]
        text = (
            f"From docs/_results/execnet_suite.json: execnet {document['execnet_version']}'s "
            f"suite on {document['date'][:10]}, Python {document['python']}"
            f"{', with a loopback sshd' if document.get('ssh') else ''}: "
            f"{counts['passed']} passed, {counts['expected_failures']} expected failures, "
            f"{counts['unexpected_failures']} unexpected, {counts['xpassed']} XPASS, "
            f"{counts['skipped']} skipped; the gate {document['gate']}. A test runs once per "
            f"gateway kind and execmodel, so one name counts several times."
        )
        return [table(header, body, ("execnet-expected",)), paragraph(text, ("results-source",))]


# ---------------------------------------------------------------- roles


class FigureRole(SphinxRole):
    """``:result:``, ``:ratio:`` and ``:target:``: ``bench | ...``."""

    def run(self) -> tuple[list[nodes.Node], list[nodes.system_message]]:
        try:
            text = render_role(self.name, self.text)
        except (ResultsError, KeyError) as failure:
            LOG.warning(f":{self.name}: {failure}", location=self.get_location())
            return [nodes.inline(text=self.text)], []
        bench = self.text.split("|", 1)[0].strip()  # the dependency: rebuild on a new run
        self.env.note_dependency(str(RESULTS / f"{bench}.json"))
        node = nodes.inline(text=text, classes=["results-figure"])
        return [node], []


def render_role(name: str, text: str) -> str:
    """What a role renders to (also used by tests/test_claims.py)."""
    text = " ".join(text.split())  # a role may wrap across lines
    bench, _, rest = text.partition("|")
    document = load(bench.strip())
    if name == "result":
        return format_result(document, rest)
    if name == "ratio":
        row_name, pair = split(rest, 2)
        return format_ratio(ratio(find_row(document, row_name), pair))
    if name == "target":
        return format_target(find_target(document, rest))
    if name == "field":
        value: Any = document
        for key in rest.strip().split("."):
            if not isinstance(value, dict) or key not in value:
                raise ResultsError(f"{bench.strip()}.json has no field {rest.strip()!r}")
            value = value[key]
        return str(value)[:10] if rest.strip() == "date" else str(value)
    raise ResultsError(f"unknown role {name}")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("results-table", ResultsTable)
    app.add_directive("results-targets", ResultsTargets)
    app.add_directive("results-chart", ResultsChart)
    app.add_directive("headline-chart", HeadlineChart)
    app.add_directive("execnet-expected", ExecnetExpected)
    for name in ("result", "ratio", "target", "field"):
        app.add_role(name, FigureRole())
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
