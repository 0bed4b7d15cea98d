"""The fleet's blocking twins in :mod:`asyncgw.sync`: execo's names, execo's
blocking methods, for scripts and notebooks::

    from asyncgw.sync import Remote, Report
    action = Remote("uname -r", "node[1-8]").run()
    print(Report(action).to_string())

Made as the rest of the facade is: each blocking action owns an async one
(:mod:`asyncgw.fleet`) and runs its methods on the facade's loop thread
with ``run_blocking``. Processes are the async ones: their fields are
plain values, readable from any thread. Hosts may be facade gateways and
groups. Expressions in ``{{...}}`` are evaluated in the caller's frame,
as with the async classes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .._loopthread import run_blocking
from ..fleet import actions as _actions
from ..fleet import transfers as _transfers
from ..fleet.process import STDOUT, Process
from ..fleet.substitution import caller_namespace
from .gateway import Gateway
from .group import Group

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["Action", "Get", "Local", "ParallelActions", "Put", "Remote", "SequentialActions"]


def _core(hosts: Any) -> Any:
    """Facade gateways and groups replaced by their core objects."""
    if isinstance(hosts, Gateway):
        return hosts._gateway
    if isinstance(hosts, Group):
        return hosts._group
    if isinstance(hosts, str) or not isinstance(hosts, Sequence | set | frozenset):
        return hosts
    return [_core(item) for item in hosts]


class Action:
    """A blocking action around an async one (see :mod:`asyncgw.fleet.actions`)."""

    def __init__(self, action: _actions.Action) -> None:
        self._action = action

    def __repr__(self) -> str:
        return repr(self._action)

    # execo's state, read as it is
    name = property(lambda self: self._action.name, doc="The action's name (for reports).")
    processes = property(
        lambda self: self._action.processes,
        doc="Its processes (:attr:`asyncgw.fleet.Action.processes`).",
    )
    started = property(lambda self: self._action.started, doc="Whether any process has started.")
    ended = property(lambda self: self._action.ended, doc="Whether every process has ended.")
    ok = property(lambda self: self._action.ok, doc="execo's ``ok``: no process has failed so far.")
    finished_ok = property(
        lambda self: self._action.finished_ok, doc="Whether every process has ended, and ended ok."
    )

    def stats(self) -> dict[str, Any]:
        """execo's statistics (see :meth:`asyncgw.fleet.Report.stats`)."""
        return self._action.stats()

    def reports(self) -> list[Any]:
        """Sub-reports for :class:`~asyncgw.fleet.Report`."""
        return self._action.reports()

    def start(self) -> Action:
        """Start every process and return at once."""

        async def start() -> None:
            self._action.start()

        run_blocking(start)
        return self

    def wait(self, timeout: float | None = None) -> Action:
        """Block until every process has ended (at most ``timeout`` s);
        Ctrl-C stops them."""
        run_blocking(self._action.wait, timeout)
        return self

    def run(self, timeout: float | None = None) -> Action:
        """Start, then wait."""
        return self.start().wait(timeout)

    def kill(self) -> Action:
        """Stop every running process and wait for their ends."""
        run_blocking(self._action.kill)
        return self

    def reset(self) -> Action:
        """Forget the last run, to run again."""
        self._action.reset()
        return self

    def close(self) -> None:
        """Stop what runs; let go of the connections kept for reruns."""
        run_blocking(self._action.close)

    def __enter__(self) -> Action:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def expect(
        self, regex: str | re.Pattern[str], timeout: float | None = None, stream: str = STDOUT
    ) -> list[tuple[Process, re.Match[str] | None]]:
        """See :meth:`asyncgw.fleet.Action.expect`."""
        result: list[tuple[Process, re.Match[str] | None]] = run_blocking(
            self._action.expect, regex, timeout, stream
        )
        return result

    def lines(self) -> Iterator[tuple[str, str, str]]:
        """``(host, stream, line)`` as lines arrive, until every process ended."""
        lines: AsyncIterator[tuple[str, str, str]] = self._action.lines()
        try:
            while True:
                try:
                    yield run_blocking(lines.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            run_blocking(lines.aclose)  # type: ignore[attr-defined]


class Remote(Action):
    """A shell command on each host (see :class:`asyncgw.fleet.Remote`)."""

    def __init__(self, cmd: str, hosts: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("namespace", caller_namespace(1))
        if "via" in kwargs:
            kwargs["via"] = _core(kwargs["via"])
        super().__init__(_actions.Remote(cmd, _core(hosts), *args, **kwargs))


class Local(Action):
    """A shell command here (see :class:`asyncgw.fleet.Local`)."""

    def __init__(self, cmd: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(_actions.Local(cmd, *args, **kwargs))


class Put(Action):
    """Copy files to each host (see :class:`asyncgw.fleet.Put`)."""

    def __init__(self, hosts: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("namespace", caller_namespace(1))
        super().__init__(_transfers.Put(_core(hosts), *args, **kwargs))


class Get(Action):
    """Copy files from each host (see :class:`asyncgw.fleet.Get`)."""

    def __init__(self, hosts: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("namespace", caller_namespace(1))
        super().__init__(_transfers.Get(_core(hosts), *args, **kwargs))


class ParallelActions(Action):
    """Blocking actions at once (see :class:`asyncgw.fleet.ParallelActions`)."""

    def __init__(self, actions: Sequence[Action], name: str | None = None) -> None:
        self.actions = list(actions)
        super().__init__(_actions.ParallelActions([a._action for a in self.actions], name))


class SequentialActions(Action):
    """Blocking actions one after the other (see :class:`asyncgw.fleet.SequentialActions`)."""

    def __init__(self, actions: Sequence[Action], name: str | None = None) -> None:
        self.actions = list(actions)
        super().__init__(_actions.SequentialActions([a._action for a in self.actions], name))
