"""Report: execo's summary of actions and processes.

``Report(actions).to_string()`` prints, in execo's layout, a line per
action (and, indented, per sub-action) and a total: start and end dates,
length, and how many processes started, ended, failed to start, timed
out, were killed by force, returned non-zero, are ok, and in all.
:meth:`Report.stats` gives the same figures as a dict with execo's keys.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["Report", "empty_stats", "format_seconds", "format_unixts", "merge_stats"]

#: The report's count columns, and their titles in both layouts.
_COLUMNS = (
    "num_started",
    "num_ended",
    "num_errors",
    "num_timeouts",
    "num_forced_kills",
    "num_non_zero_exit_codes",
    "num_ok",
    "num_processes",
)
_TITLES = ("started", "ended", "error", "timeout", "fkilled", "ret!=0", "ok", "total")
_WIDE_TITLES = ("started", "ended", "errors", "timeouts", "f.killed", "badretval", "ok", "total")
#: Every count of the statistics: the columns, and the finished-ok count.
_COUNTS = (*_COLUMNS, "num_finished_ok")


class HasStats(Protocol):
    def stats(self) -> dict[str, Any]: ...


def empty_stats() -> dict[str, Any]:
    """Statistics of nothing: dates ``None``, counts 0."""
    return {"name": None, "start_date": None, "end_date": None, **dict.fromkeys(_COUNTS, 0)}


def merge_stats(name: str, parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The statistics of several parts: the earliest start, the latest end
    (``None`` until every process has ended), the counts summed."""
    stats = empty_stats()
    stats["name"] = name
    starts, ends = [], []
    for part in parts:
        for key in _COUNTS:
            stats[key] += part[key]
        if part["start_date"] is not None:
            starts.append(part["start_date"])
        if part["end_date"] is not None:
            ends.append(part["end_date"])
    stats["start_date"] = min(starts, default=None)
    if stats["num_ended"] == stats["num_processes"] and ends:
        stats["end_date"] = max(ends)
    return stats


def format_unixts(timestamp: float | None) -> str:
    """A date as execo shows it (local time), or ``""``."""
    if timestamp is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def format_seconds(seconds: float) -> str:
    """A duration: ``3.204s``, ``2m03s``, ``1h02m03s``."""
    if seconds < 60:
        return f"{seconds:.3f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Report:
    """A summary of actions (or processes, or other reports)."""

    def __init__(
        self, reports: HasStats | Iterable[HasStats] | None = None, name: str | None = None
    ):
        self.name = name or type(self).__name__
        self._reports: list[HasStats] = []
        if reports is not None:
            self.add([reports] if hasattr(reports, "stats") else reports)  # type: ignore[list-item]

    def add(self, reports: Iterable[HasStats]) -> None:
        """Add actions, processes or reports."""
        for report in reports:
            if report not in self._reports:
                self._reports.append(report)

    def reports(self) -> list[HasStats]:
        """What this report covers, by start date."""
        return sorted(
            self._reports,
            key=lambda report: (
                report.stats()["start_date"] is None,
                report.stats()["start_date"] or 0,
            ),
        )

    def stats(self) -> dict[str, Any]:
        """execo's statistics, summed over what the report covers: its
        name, the first start and last end dates, and the counts of
        processes started, ended, failed, timed out, killed, with a nonzero
        exit status, ok, and in all."""
        return merge_stats(self.name, (report.stats() for report in self._reports))

    def __repr__(self) -> str:
        return f"<Report(<{len(self._reports)} entries>, name={self.name!r})>"

    def to_string(self, wide: bool = False, brief: bool = False) -> str:
        """execo's layout: 80 columns, or 175 with ``wide``; with
        ``brief`` only the total line."""
        rule = "-" * (175 if wide else 79) + "\n"
        if wide:
            titles = "".join(f"{title:<10}" for title in _WIDE_TITLES)
            out = f"{'Name':<40}{'start':<20}{'end':<20}{'length':<15}{titles}\n{rule}"
        else:
            titles = "".join(f"{title:<8}" for title in _TITLES)
            out = f"{'Name':<40}{'start':<20}{'end':<19}\n  {'length':<13}{titles}\n{rule}"

        def line(name: str, stats: dict[str, Any], indent: int) -> str:
            length = (
                format_seconds(stats["end_date"] - stats["start_date"])
                if stats["start_date"] is not None and stats["end_date"] is not None
                else ""
            )
            counts = [stats[key] for key in _COLUMNS]
            label = (" " * indent + name)[:39]
            start, end = format_unixts(stats["start_date"]), format_unixts(stats["end_date"])
            dates = f"{start:<19.19} {end:<19.19}"
            if wide:
                return (
                    f"{label:<39} {dates} {length:<15.15}"
                    + "".join(f"{count!s:<10.10}" for count in counts)
                    + "\n"
                )
            return (
                f"{label:<39} {dates}\n  {length:<13.13}"
                + "".join(f"{count!s:<8.8}" for count in counts)
                + "\n"
            )

        def walk(report: HasStats, indent: int) -> str:
            stats = report.stats()
            text = line(str(stats["name"]), stats, indent)
            for sub in getattr(report, "reports", lambda: [])():
                text += walk(sub, indent + 2)
            return text

        if not brief and self._reports:
            for report in self.reports():
                out += walk(report, 0)
            out += rule
        return out + line(self.name, self.stats(), 0)
