"""Actions: sets of processes started, awaited, stopped together (execo's).

``Remote`` runs a shell command on many hosts, ``Local`` one here,
``Put``/``Get`` copy files to and from many hosts; ``ParallelActions`` and
``SequentialActions`` combine actions. Every action has execo's methods,
awaitable here (blocking twins in :mod:`asyncgw.sync`)::

    action = Remote("uname -r", "node[1-8]")
    await action.run()                  # or: action.start(); ...; await action.wait()
    print(Report(action).to_string())
    for process in action.processes:
        print(process.host_name, process.exit_code, process.stdout)

An action keeps the SSH connections it opened until it is closed
(``async with``, :meth:`Action.close`) or collected, so that running it
again (``reset()``, then ``run()``) and other actions to the same hosts
reuse them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..transports import sshpool
from .hosts import Host, get_hosts_list, resolve_params
from .process import STDOUT, LocalProcess, Process
from .remoteprocess import GatewayProcess, RelayedSshProcess, SshProcess
from .report import merge_stats
from .substitution import Namespace, Substitution, caller_namespace

if TYPE_CHECKING:
    from .._gateway import Gateway

__all__ = [
    "Action",
    "Local",
    "ParallelActions",
    "Remote",
    "SequentialActions",
    "Target",
    "TargetsLike",
    "get_targets",
]

#: One place to run on: a host reached over SSH, or a gateway.
Target = Host | Any  # Any: a Gateway (imported lazily; the core does not import the fleet)
TargetsLike = Any  # a Host, a node-set string, a Gateway, a Group, or an iterable of these

#: Keyword arguments of actions that are passed on to each process.
PROCESS_ARGS = frozenset(
    {
        "timeout",
        "ignore_exit_code",
        "ignore_timeout",
        "ignore_error",
        "nolog_exit_code",
        "nolog_timeout",
        "nolog_error",
        "stdout_handlers",
        "stderr_handlers",
        "kill_grace",
        "max_output",
    }
)


def get_targets(hosts: TargetsLike) -> list[Target]:
    """Hosts and gateways, in order, each once: ``hosts`` may be a
    :class:`Host`, a node-set pattern, a gateway, a group, or an iterable
    of these.

    :raises ValueError: for an empty list or a bad pattern.
    """
    from .._gateway import Gateway
    from .._group import Group

    if isinstance(hosts, Host | str | Gateway):
        items: Iterable[Any] = [hosts]
    elif isinstance(hosts, Group):
        items = list(hosts)
    else:
        items = hosts
    targets: dict[Any, None] = {}
    for item in items:
        if isinstance(item, Gateway):
            targets[item] = None
        elif isinstance(item, Group):
            targets.update(dict.fromkeys(item))
        else:
            targets.update(dict.fromkeys(get_hosts_list(item)))
    if not targets:
        raise ValueError(f"no hosts in {hosts!r}")
    return list(targets)


def split_args(
    kwargs: dict[str, Any], process_args: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the action's own keyword arguments, those for each process).

    :raises TypeError: naming an argument that is neither.
    """
    per_process = dict(process_args or {})
    own = {}
    for key, value in kwargs.items():
        if key in PROCESS_ARGS:
            per_process[key] = value
        elif key == "name":
            own[key] = value
        else:
            raise TypeError(f"unexpected keyword argument {key!r}")
    unknown = sorted(set(per_process) - PROCESS_ARGS)
    if unknown:
        raise TypeError(f"unknown process_args {unknown}; known: {sorted(PROCESS_ARGS)}")
    return own, per_process


class Action:
    """A set of processes handled together; see the module docstring."""

    def __init__(self, processes: Sequence[Process] = (), name: str | None = None) -> None:
        self._own = list(processes)
        self.name = name or type(self).__name__
        self._holds: dict[int, sshpool.Hold] = {}
        self._finalizer = weakref.finalize(self, _release_holds_later, self._holds)

    @property
    def processes(self) -> list[Process]:
        """The processes of this action, one per host (or per command)."""
        return list(self._own)

    def _keep(self, slot: sshpool.Slot) -> None:
        """Hold the connection of ``slot`` for later runs (once per connection)."""
        key = id(slot._connection)
        if key not in self._holds:
            self._holds[key] = slot.hold()

    # -- execo's state -------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether any of its processes has started."""
        return any(process.started for process in self.processes)

    @property
    def ended(self) -> bool:
        """Whether every one of its processes has ended."""
        return all(process.ended for process in self.processes)

    @property
    def ok(self) -> bool:
        """execo's ``ok``: no process has failed so far (see :attr:`Process.ok`)."""
        return all(process.ok for process in self.processes)

    @property
    def finished_ok(self) -> bool:
        """Whether every process has ended, and ended ok."""
        return all(process.finished_ok for process in self.processes)

    def stats(self) -> dict[str, Any]:
        """execo's statistics, summed over the processes (see :class:`Report`)."""
        return merge_stats(self.name, (process.stats() for process in self.processes))

    def reports(self) -> list[Any]:
        """Sub-reports for :class:`Report` (none: processes are counted)."""
        return []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {len(self.processes)} processes>"

    # -- life cycle ----------------------------------------------------

    def start(self) -> Action:
        """Start every process (on the running loop); return the action."""
        for process in self.processes:
            process.start()
        return self

    async def wait(self, timeout: float | None = None) -> Action:
        """Wait until every process has ended, at most ``timeout`` seconds.
        Cancelling the waiting task stops the processes (and waits until
        they have stopped)."""
        tasks = self._pending()
        if not tasks:
            return self
        try:
            async with asyncio.timeout(timeout):
                await asyncio.wait(tasks)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            self._stop_all()
            await asyncio.wait(tasks)
            raise
        return self

    def _pending(self) -> list[asyncio.Future[Any]]:
        """What :meth:`wait` waits for."""
        return [process._task for process in self.processes if process._task is not None]

    def _stop_all(self) -> None:
        """Have every running process stop (each task stops its work)."""
        for process in self.processes:
            if process._task is not None and not process._task.done():
                process.killed = True
                process._task.cancel()

    async def run(self, timeout: float | None = None) -> Action:
        """Start, then wait (``timeout`` as in :meth:`wait`)."""
        self.start()
        return await self.wait(timeout)

    async def kill(self) -> Action:
        """Stop every running process and wait for their ends."""
        await asyncio.gather(*(process.kill() for process in self.processes))
        return self

    def reset(self) -> Action:
        """Forget the last run, to run again."""
        for process in self.processes:
            process.reset()
        return self

    async def close(self) -> None:
        """Stop what runs and let go of the connections kept for reruns."""
        await self.kill()
        _release_holds(self._holds)

    async def __aenter__(self) -> Action:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __await__(self) -> Generator[Any, None, Action]:
        """``await action`` runs it."""
        return self.run().__await__()

    # -- output ----------------------------------------------------------

    async def lines(self) -> AsyncIterator[tuple[str, str, str]]:
        """``(host, stream, line)`` for each line of output from now until
        every process has ended (``stream`` is ``"stdout"`` or ``"stderr"``)."""
        queue: asyncio.Queue[tuple[Process, str, str] | None] = asyncio.Queue()
        processes = self.processes
        pending = len(processes)  # each sends None at its end (at once if ended)
        for process in processes:
            process.listen(queue)
        try:
            while pending:
                item = await queue.get()
                if item is None:
                    pending -= 1
                    continue
                process, stream, line = item
                yield process.host_name, stream, line
        finally:
            for process in processes:
                process.unlisten(queue)

    async def expect(
        self, regex: str | re.Pattern[str], timeout: float | None = None, stream: str = STDOUT
    ) -> list[tuple[Process, re.Match[str] | None]]:
        """Wait until ``regex`` matches on every process (past its previous
        match); ``(process, match)`` for each, the match ``None`` where the
        process ended or ``timeout`` passed first."""
        processes = self.processes
        matches = await asyncio.gather(
            *(process.expect(regex, timeout, stream) for process in self.processes)
        )
        return list(zip(processes, matches, strict=True))


def _release_holds(holds: dict[int, sshpool.Hold]) -> None:
    for hold in holds.values():
        hold.release()
    holds.clear()


def _release_holds_later(holds: dict[int, sshpool.Hold]) -> None:
    """At collection: release on the loop the connections belong to."""
    if not holds:
        return
    loop = next(iter(holds.values()))._loop
    if loop is not None and not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(_release_holds, holds)


class Remote(Action):
    """A shell command on each host: ``Remote(cmd, hosts)``.

    Hosts reached over SSH need no Python; gateways (or a ``Group``) run
    the command through their interpreter, whatever their transport.
    ``{{{host}}}`` and ``{{expression}}`` in ``cmd`` are substituted per
    host (see :mod:`.substitution`). With ``via`` (gateways, or a group),
    hosts are reached through those intermediates in turn, a tree: each
    intermediate runs ``ssh`` to its share of the hosts, and the caller
    holds only the intermediates' connections. Other keyword arguments are execo's
    (``timeout``, ``ignore_exit_code``, ...; see :class:`Process`), for
    every process, as are those in ``process_args``.
    """

    def __init__(
        self,
        cmd: str,
        hosts: TargetsLike,
        connection_params: Mapping[str, Any] | None = None,
        process_args: Mapping[str, Any] | None = None,
        *,
        via: TargetsLike | None = None,
        namespace: Namespace | None = None,
        **kwargs: Any,
    ) -> None:
        own, per_process = split_args(kwargs, process_args)
        super().__init__(name=own.get("name") or f"Remote {cmd!r}")
        self.cmd = cmd
        self.hosts = get_targets(hosts)
        self.connection_params = check_params(connection_params)
        self.via = _intermediates(via)
        substitution = Substitution([cmd], namespace or caller_namespace(1))
        for index, target in enumerate(self.hosts):
            line = substitution.apply(cmd, _address(target), index)
            if self.via and isinstance(target, Host):
                relay = self.via[index % len(self.via)]
                self._own.append(
                    RelayedSshProcess(line, target, relay, self.connection_params, **per_process)
                )
                continue
            self._own.append(
                make_process(line, target, self.connection_params, per_process, self._keep)
            )


def make_process(
    cmd: str,
    target: Target,
    connection_params: Mapping[str, Any],
    process_args: Mapping[str, Any],
    keep: Callable[[sshpool.Slot], None] | None,
) -> Process:
    """The process that runs ``cmd`` on ``target``."""
    if isinstance(target, Host):
        return SshProcess(cmd, target, connection_params, keep=keep, **process_args)
    return GatewayProcess(cmd, target, **process_args)


def check_params(connection_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``connection_params`` as a dict, checked now (whatever the hosts).

    :raises ValueError: naming keys that are not connection parameters.
    """
    resolve_params(Host("check"), connection_params)
    return dict(connection_params or {})


def _intermediates(via: TargetsLike | None) -> list[Gateway]:
    """The gateways of a tree (``via=``): a gateway, a group, or a list.

    :raises TypeError: for anything that is not a gateway.
    """
    if via is None:
        return []
    targets = get_targets(via)
    bad = [target for target in targets if isinstance(target, Host)]
    if bad:
        raise TypeError(f"via= takes gateways (started intermediates), not hosts: {bad}")
    return [target for target in targets if not isinstance(target, Host)]


def _address(target: Target) -> str:
    return target.address if isinstance(target, Host) else str(target.id)


class Local(Action):
    """A shell command here: ``Local(cmd)``, one :class:`LocalProcess`."""

    def __init__(self, cmd: str, process_args: Mapping[str, Any] | None = None, **kwargs: Any):
        own, per_process = split_args(kwargs, process_args)
        super().__init__(
            [LocalProcess(cmd, **per_process)], name=own.get("name") or f"Local {cmd!r}"
        )
        self.cmd = cmd


class _MultiAction(Action):
    def __init__(self, actions: Iterable[Action], name: str | None = None) -> None:
        self.actions = list(actions)
        super().__init__(name=name)

    @property
    def processes(self) -> list[Process]:
        return [process for action in self.actions for process in action.processes]

    def stats(self) -> dict[str, Any]:
        return merge_stats(self.name, (action.stats() for action in self.actions))

    def _pending(self) -> list[asyncio.Future[Any]]:
        return [task for action in self.actions for task in action._pending()]

    def _stop_all(self) -> None:
        for action in self.actions:
            action._stop_all()

    def reports(self) -> list[Any]:
        return list(self.actions)

    def reset(self) -> Action:
        for action in self.actions:
            action.reset()
        return self

    async def close(self) -> None:
        await asyncio.gather(*(action.close() for action in self.actions))


class ParallelActions(_MultiAction):
    """Several actions at once."""

    def start(self) -> Action:
        for action in self.actions:
            action.start()
        return self


class SequentialActions(_MultiAction):
    """Several actions, each started when the one before has ended."""

    def __init__(self, actions: Iterable[Action], name: str | None = None) -> None:
        super().__init__(actions, name)
        self._runner: asyncio.Task[None] | None = None

    def start(self) -> Action:
        self._runner = asyncio.get_running_loop().create_task(self._run_all())
        return self

    async def _run_all(self) -> None:
        for action in self.actions:
            await action.run()

    async def wait(self, timeout: float | None = None) -> Action:
        if self._runner is None:
            raise RuntimeError(f"{self!r} was not started")
        return await super().wait(timeout)

    def _pending(self) -> list[asyncio.Future[Any]]:
        return [self._runner] if self._runner is not None else []

    def _stop_all(self) -> None:
        if self._runner is not None:
            self._runner.cancel()  # the running action's wait stops its processes

    async def kill(self) -> Action:
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
            await asyncio.wait([self._runner])
        return await super().kill()
