"""The end of a command: clush ``-b``'s grouped summary, or ``--json``.

The summary prints a header per group of hosts whose results read the
same, the hosts folded back into a node set, then their output once::

    ---------------- node[1-3,5] (4 hosts) exit 0 ----------------
    Linux
    ---------------- node4 (1 host) unreachable ----------------
    HostNotFound: cannot connect to node4: ...
    5 hosts in 0.4 s: 4 ok, 1 failed (1 unreachable)

:func:`render_plain` writes it as plain text (pipes, files, no rich);
:func:`render_rich` with rich's colors and rules, for a terminal.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, TextIO

from ..fleet import fold
from .results import Group, HostResult, group_results

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["count_line", "header", "render_json", "render_plain", "render_rich"]

#: Headers of error groups, by the kind of error.
_ERROR_TITLES = {
    "HostNotFound": "unreachable",
    "AuthenticationError": "authentication failed",
    "HostKeyError": "host key not accepted",
}

#: rich styles of the groups, by status.
_STYLES = {
    "ok": "green",
    "exit": "red",
    "timeout": "yellow",
    "error": "bold red",
    "interrupted": "magenta",
}


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _error_kind(reason: str) -> str:
    return reason.split(":", 1)[0]


def header(group: Group, timeout: float | None) -> str:
    """``node[1-3] (3 hosts) exit 0``."""
    count = len(group.results)
    hosts = f"{fold(group.hosts)} ({count} host{'s' if count != 1 else ''})"
    if group.status == "error":
        assert group.results[0].error is not None
        kind = _error_kind(group.results[0].error)
        status = _ERROR_TITLES.get(kind, f"failed: {kind}")
    elif group.status == "timeout":
        status = f"timed out after {timeout:g} s" if timeout else "timed out"
    elif group.status == "interrupted":
        status = "interrupted"
    elif group.transferred is not None:  # a copy: it worked (or it is an error)
        status = f"ok, {_bytes(group.transferred)} copied" if group.transferred else "ok"
    elif group.exit_code is None:
        status = "no exit status"
    else:
        status = f"exit {group.exit_code}"
    return f"{hosts} {status}"


def _error_text(group: Group) -> str:
    if group.status != "error":
        return ""
    if group.error is not None:  # the same for every host
        return group.error + "\n"
    return "".join(f"{result.host}: {result.error}\n" for result in group.results)


def count_line(results: list[HostResult], elapsed: float, signum: int | None) -> str:
    """``5 hosts in 0.4 s: 4 ok, 1 failed (1 unreachable)``."""
    total = len(results)
    ok = sum(result.ok for result in results)
    kinds = {
        "exit": "non-zero exit",
        "timeout": "timed out",
        "error": "error",
        "interrupted": "interrupted",
    }
    failures = [
        f"{number} {kinds[status]}"
        for status in kinds
        if (number := sum(result.status == status for result in results))
    ]
    text = f"{total} host{'s' if total != 1 else ''} in {elapsed:.1f} s: {ok} ok"
    if failures:
        text += f", {total - ok} failed ({', '.join(failures)})"
    if signum is not None:
        text += " - interrupted"
    return text


def _with_newline(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def render_plain(
    results: list[HostResult],
    out: TextIO,
    *,
    timeout: float | None,
    elapsed: float,
    signum: int | None,
    quiet: bool,
) -> None:
    """The summary as plain text on ``out``."""
    for group in group_results(results):
        if quiet and group.status == "ok" and not group.stdout and not group.stderr:
            continue
        out.write(f"{'-' * 16} {header(group, timeout)} {'-' * 16}\n")
        out.write(_with_newline(group.stdout))
        if group.stderr:
            out.write(f"{'-' * 8} stderr\n")
            out.write(_with_newline(group.stderr))
        out.write(_error_text(group))
    if not quiet:
        out.write(count_line(results, elapsed, signum) + "\n")
    out.flush()


def render_rich(
    results: list[HostResult],
    console: Console,
    *,
    timeout: float | None,
    elapsed: float,
    signum: int | None,
    quiet: bool,
) -> None:
    """The summary on a rich ``console``: a colored rule per group."""
    from rich.text import Text

    def print_text(text: str, style: str) -> None:
        # The terminal wraps long lines (so that copies keep them whole); a
        # recording has no terminal to do it.
        console.print(Text(text.rstrip("\n"), style=style), soft_wrap=not console.record)

    for group in group_results(results):
        if quiet and group.status == "ok" and not group.stdout and not group.stderr:
            continue
        style = _STYLES[group.status]
        console.rule(Text(header(group, timeout), style=style), style=style, align="left")
        if group.stdout:
            print_text(group.stdout, "")
        if group.stderr:
            print_text(group.stderr, "red")
        if group.status == "error":
            print_text(_error_text(group), "red")
    if not quiet:
        failed = any(not result.ok for result in results) or signum is not None
        print_text(count_line(results, elapsed, signum), "bold red" if failed else "bold green")


def render_json(results: list[HostResult], out: TextIO) -> None:
    """``--json``: an array of one object per host, and nothing else."""
    json.dump([result.to_json() for result in results], out, indent=2)
    out.write("\n")
    out.flush()
