"""What a command prints: live progress on a terminal, then the summary.

:class:`Display` picks one of three faces, once:

- ``--json``: nothing while the command runs, the JSON array at the end;
- rich on a terminal (stdout is a TTY and rich is installed): a live view
  that redraws in place — a spinner with the counts of hosts done, failed
  and running, and a line per running host with its last line of output
  (at most ten, then "... and N more") — then the summary in color
  (``--no-progress`` and ``-q`` keep the colors, without the live view);
- plain, when stdout is a pipe or a file or rich is missing: no live
  view, the summary as plain text.

``exec`` prints each value the code sends as ``HOST: value`` as it comes,
above the live view, in every face but ``--json`` and ``-q``.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from .args import Args
from .commands import Watched
from .results import HostResult
from .summary import render_json, render_plain, render_rich

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live
    from rich.spinner import Spinner

__all__ = ["Display", "has_rich"]

#: Redraws per second of the live view.
_REFRESH = 8
#: Most lines of running hosts the live view shows.
_MAX_ROWS = 10


def has_rich() -> bool:
    """Whether rich is installed (the ``cli`` extra)."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


class Display:
    """The output of one command; see the module docstring."""

    def __init__(self, args: Args, out: TextIO | None = None) -> None:
        self.args = args
        self.out = out if out is not None else sys.stdout
        tty = _isatty(self.out)
        self.console: Console | None = None
        if not args.json and (tty or args.svg) and has_rich():
            self.console = _console(self.out, args.svg is not None)
        self.live_view = self.console is not None and tty and args.progress and not args.svg
        self._live: Live | None = None
        self._spinner: Spinner | None = None
        self._title = ""
        self._watched: Sequence[tuple[str, Watched]] = ()
        self._last: dict[str, str] = {}
        self._started = time.monotonic()

    # -- while the command runs -----------------------------------------

    def start(self, title: str, watched: Sequence[tuple[str, Watched]]) -> None:
        """Show the live view of ``watched`` (label, progress) pairs, if
        this display has one."""
        self._title = " ".join(title.split())  # one line
        self._watched = watched
        self._started = time.monotonic()
        if not self.live_view or self.console is None:
            return
        from rich.live import Live

        self._live = Live(
            console=self.console,
            get_renderable=self._render,
            refresh_per_second=_REFRESH,
            transient=True,
        )
        self._live.start()

    def stop(self) -> None:
        """Take the live view away (before the summary)."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def line(self, host: str, stream: str, text: str) -> None:
        """A line of output from ``host``: the live view shows the last one."""
        self._last[host] = text

    def item(self, host: str, text: str) -> None:
        """A value ``exec``'s code sent: printed at once as ``HOST: value``."""
        self._last[host] = text
        if self.args.json or self.args.quiet:
            return
        lines = text.splitlines() or [""]
        if self.console is not None:
            from rich.text import Text

            for line in lines:
                self.console.print(
                    Text.assemble((f"{host}: ", "cyan"), line), soft_wrap=True, highlight=False
                )
        else:
            self.out.write("".join(f"{host}: {line}\n" for line in lines))
            self.out.flush()

    def note(self, text: str) -> None:
        """A message for the user (on stderr, out of the way of the output)."""
        sys.stderr.write(f"asyncgw: {text}\n")
        sys.stderr.flush()

    def _render(self) -> RenderableType:
        from rich.console import Group
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        total = len(self._watched)
        running = [label for label, work in self._watched if work.started and not work.ended]
        ended = [work for _, work in self._watched if work.ended]
        failed = sum(not work.ok for work in ended)
        counts = Text.assemble(
            (f"{len(ended)}/{total} done", "bold"),
            " (",
            (f"{len(ended) - failed} ok", "green"),
            ", ",
            (f"{failed} failed", "red" if failed else ""),
            f"), {len(running)} running  {time.monotonic() - self._started:.1f} s  ",
            (self._title, "dim"),
        )
        assert self.console is not None
        counts.truncate(max(10, self.console.width - 2), overflow="ellipsis")
        rows = max(1, min(_MAX_ROWS, self.console.height - 3))
        table = Table.grid(padding=(0, 1))
        table.add_column(style="cyan", no_wrap=True)
        table.add_column(style="dim", no_wrap=True, overflow="ellipsis")
        shown = running if len(running) <= rows else running[: rows - 1]
        for label in shown:
            table.add_row(label, self._last.get(label, ""))
        if len(shown) < len(running):
            table.add_row("", f"... and {len(running) - len(shown)} more running")
        if self._spinner is None:  # one spinner: it turns with the time since it was made
            self._spinner = Spinner("dots", style="cyan")
        self._spinner.update(text=counts)
        return Group(self._spinner, table)

    # -- at the end ------------------------------------------------------

    def finish(self, results: list[HostResult], signum: int | None) -> None:
        """Print the summary (or the JSON array); save it as SVG if asked."""
        self.stop()
        elapsed = time.monotonic() - self._started
        if self.args.json:
            render_json(results, self.out)
            return
        timeout, quiet = self.args.timeout, self.args.quiet
        if self.console is None:
            render_plain(
                results, self.out, timeout=timeout, elapsed=elapsed, signum=signum, quiet=quiet
            )
            return
        render_rich(
            results, self.console, timeout=timeout, elapsed=elapsed, signum=signum, quiet=quiet
        )
        if self.args.svg is not None:
            self.console.save_svg(
                self.args.svg, title=f"asyncgw {self.args.command}", code_format=_svg_format()
            )


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def _console(out: TextIO, record: bool) -> Console:
    from rich.console import Console

    if not record:
        return Console(file=out, highlight=False)
    # A recording for the docs: colors whatever stdout is, a fixed width.
    width = int(os.environ.get("COLUMNS", "88"))
    return Console(
        file=out,
        highlight=False,
        record=True,
        force_terminal=True,
        color_system="truecolor",
        width=width,
    )


def _svg_format() -> str:
    """rich's SVG template without its web fonts: the picture loads nothing."""
    from rich.console import CONSOLE_SVG_FORMAT  # type: ignore[attr-defined]

    return re.sub(r',\s*url\("[^"]*"\) format\("[^"]*"\)', "", CONSOLE_SVG_FORMAT)
