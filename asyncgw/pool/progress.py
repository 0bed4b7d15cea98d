"""``progress=True``: a rich progress bar for one map, on standard error.

rich comes with the ``cli`` extra; the bar is made before any task is
sent, so a missing rich is an :class:`ImportError` saying which extra to
install, and no work was started.

Invariants: :meth:`Bar.advance` is cheap and thread-safe (the pool's loop
calls it after each chunk's results, while the caller's thread may close
the bar); :meth:`Bar.close` is idempotent and leaves the bar drawn at its
last count.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Bar"]


class Bar:
    """A bar for ``total`` tasks, labelled ``description``.

    :param console: a :class:`rich.console.Console` to draw on (default:
        standard error).
    :raises ImportError: if rich is not installed.
    """

    def __init__(self, total: int, description: str, console: Any = None) -> None:
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
        except ImportError:
            raise ImportError(
                "progress=True draws its bar with rich, which is not installed: "
                "pip install 'asyncgw[cli]' (or rich)"
            ) from None
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console if console is not None else Console(stderr=True),
        )
        self._task = self._progress.add_task(description, total=total)
        self._done = 0
        self._closed = False
        self._progress.start()

    def advance(self, done: int) -> None:
        """``done`` tasks of the total are settled (ok or not)."""
        if done != self._done and not self._closed:
            self._done = done
            self._progress.update(self._task, completed=done)

    def close(self) -> None:
        """Stop drawing (the last count stays on screen)."""
        if not self._closed:
            self._progress.update(self._task, completed=self._done)
            self._closed = True
            self._progress.stop()
