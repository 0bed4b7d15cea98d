"""The commands: ``run``, ``put``, ``get`` and ``exec`` as jobs over the library.

A :class:`Job` is built from :class:`~.args.Args`, opened, run, closed,
and asked for its :class:`~.results.HostResult` list, which it can give
at any time: after a Ctrl-C it holds what arrived. Cancelling
:meth:`Job.run` stops the remote work (the fleet's processes stop their
commands; ``exec`` kills its gateways) before it returns.

Each command is one library call, so a script can do the same:

- ``run``: the fleet's processes (``SshProcess``, and ``LocalProcess``
  for this machine) in one :class:`~asyncgw.fleet.Action`; the CLI
  substitutes only ``{{{host}}}``, so that ``{{...}}`` in a command (Go
  templates: ``docker ps --format '{{.Names}}'``) stays as it is, where
  :class:`~asyncgw.fleet.Remote` would evaluate it as Python;
- ``put``/``get``: :class:`~asyncgw.fleet.Put` and :class:`~asyncgw.fleet.Get`,
  through a ``popen`` gateway for this machine;
- ``exec``: ``gateway.remote_exec(code)`` on a gateway per host.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import asyncgw

from ..fleet import Action, Get, LocalProcess, ParallelActions, Process, Put, SshProcess
from .args import Args, UsageError
from .results import HostResult, from_process
from .targets import Target, connection_params, gateway_spec

__all__ = ["ExecJob", "Job", "LineSink", "Watched", "make_job"]

#: Seconds a gateway has to exit at the end before it is killed.
_EXIT_TIMEOUT = 2.0


class Watched(Protocol):
    """What the live display reads of each host's work."""

    @property
    def started(self) -> bool: ...

    @property
    def ended(self) -> bool: ...

    @property
    def ok(self) -> bool: ...


class LineSink(Protocol):
    """Where jobs report output as it arrives (the display)."""

    def line(self, host: str, stream: str, text: str) -> None: ...

    def item(self, host: str, text: str) -> None: ...


class Job:
    """One command on every target; see the module docstring."""

    def __init__(self, args: Args, sink: LineSink) -> None:
        self.args = args
        self.sink = sink
        self.targets = args.targets
        self.params = connection_params(args.options)
        self.group = asyncgw.Group(exit_timeout=_EXIT_TIMEOUT)
        #: The action, once opened (run, put, get).
        self.action: Action | None = None
        self._labels: list[str] = []

    @property
    def title(self) -> str:
        """What the job does, for the live display."""
        return f"{self.args.command} {self.args.remote_command or ' '.join(self.args.sources)}"

    def watched(self) -> list[tuple[str, Watched]]:
        """(label, progress) for each host, for the live display."""
        if self.action is None:
            return []
        return list(zip(self._labels, self.action.processes, strict=True))

    async def close(self) -> None:
        """Stop what still runs, end the connections and gateways."""
        try:
            if self.action is not None:
                await self.action.close()
        finally:
            await self.group.terminate(_EXIT_TIMEOUT)

    async def open(self) -> None:
        """Make the action (and what it needs); nothing runs yet.

        :raises UsageError: for paths the library refuses.
        """
        raise NotImplementedError

    async def run(self) -> None:
        """Run on every host until all have ended. Cancelling stops the
        remote commands, then raises :exc:`asyncio.CancelledError`."""
        assert self.action is not None
        await self.action.run()

    def results(self) -> list[HostResult]:
        """One result per host, in the order of ``HOSTS``; what arrived so far."""
        if self.action is None:  # stopped before it started
            return [HostResult(target.label, interrupted=True) for target in self.targets]
        return [
            from_process(label, process)
            for label, process in zip(self._labels, self.action.processes, strict=True)
        ]

    def _process_args(self) -> dict[str, Any]:
        # The summary reports failures: the fleet's logger need not.
        return {
            "timeout": self.args.timeout,
            "nolog_exit_code": True,
            "nolog_error": True,
            "nolog_timeout": True,
        }

    async def _local_gateway(self) -> asyncgw.Gateway:
        spec = gateway_spec(Target("localhost", None), self.args.options, "localhost", None)
        return await self.group.makegateway(spec)

    async def _places(self) -> list[Any]:
        """Hosts for the fleet, with a popen gateway for this machine."""
        return [
            target.host if target.host is not None else await self._local_gateway()
            for target in self.targets
        ]


class RunJob(Job):
    """A shell command on each host: the fleet's processes."""

    @property
    def title(self) -> str:
        return self.args.remote_command

    async def open(self) -> None:
        processes: list[Process] = []
        for target in self.targets:
            cmd = self.args.remote_command.replace("{{{host}}}", target.address)
            handlers = [self._handler(target.label)]
            kwargs = dict(self._process_args(), stdout_handlers=handlers, stderr_handlers=handlers)
            if target.host is None:
                processes.append(LocalProcess(cmd, **kwargs))
            else:
                processes.append(SshProcess(cmd, target.host, self.params, **kwargs))
            self._labels.append(target.label)
        self.action = Action(processes, name=f"run {self.args.remote_command!r}")

    def _handler(self, label: str) -> Callable[[Process, str, str], None]:
        def handler(process: Process, stream: str, line: str) -> None:
            self.sink.line(label, stream, line)

        return handler


#: Errors of a copy whose DEST (or its parent) is missing or not a directory.
_MISSING_DEST = ("FileNotFoundError", "IsADirectoryError", "NotADirectoryError")


def _missing_dest_hint(command: str, dest: str, where: str) -> str:
    return f"{command}: {dest!r} does not exist {where} (add --mkdir to create it)"


class PutJob(Job):
    """One :class:`~asyncgw.fleet.Put` to every host.

    As ``scp``: a missing ``DEST/`` (or a missing parent of ``DEST``) is a
    failure of that host, reported with a hint at ``--mkdir`` rather than
    as the remote ``OSError`` of the temporary file the copy writes.
    """

    def results(self) -> list[HostResult]:
        results = super().results()
        if not self.args.mkdir:
            dest = self.args.dest
            for result in results:
                if result.error is not None and any(name in result.error for name in _MISSING_DEST):
                    result.error += f" (is {dest!r} missing there? add --mkdir to create it)"
        return results

    async def open(self) -> None:
        places = await self._places()
        try:
            self.action = Put(
                places, self.args.sources, self.args.dest, self.params,
                create_dirs=self.args.mkdir, namespace=({}, {}), **self._process_args(),
            )  # fmt: skip
        except ValueError as exc:
            raise UsageError(f"asyncgw put: {exc}") from None
        self._labels = [target.label for target in self.targets]


class GetJob(Job):
    """A :class:`~asyncgw.fleet.Get` per host (each has its own destination).

    DEST is checked here before any host is reached, the same way for one
    host and for several: a missing ``DEST/`` (trailing slash: a directory
    is meant), or a missing parent of ``DEST``, is a usage error suggesting
    ``--mkdir``. Only then does the layout differ: one host's files go into
    DEST (or become DEST, as ``scp``), several hosts' into DEST/HOST/.
    """

    def _check_dest(self) -> None:
        dest = self.args.dest
        if self.args.mkdir or os.path.isdir(dest):
            return
        parent = os.path.dirname(dest.rstrip(os.sep)) or "."
        if dest.endswith(os.sep) or not os.path.isdir(parent):
            raise UsageError(_missing_dest_hint("asyncgw get", dest, "here"))

    async def open(self) -> None:
        self._check_dest()
        places = await self._places()
        several = len(self.targets) > 1
        actions: list[Action] = []
        try:
            for target, place in zip(self.targets, places, strict=True):
                # Several hosts: each into DEST/HOST/, as pssh's pslurp.
                dest = os.path.join(self.args.dest, target.label) if several else self.args.dest
                actions.append(
                    Get(
                        [place],
                        self.args.sources,
                        dest,
                        self.params,
                        create_dirs=self.args.mkdir or several,
                        namespace=({}, {}),
                        **self._process_args(),
                    )
                )
                self._labels.append(target.label)
        except ValueError as exc:
            raise UsageError(f"asyncgw get: {exc}") from None
        self.action = ParallelActions(actions, name="get")


class _ExecState:
    """One host's ``exec``, as it goes."""

    def __init__(self, label: str) -> None:
        self.result = HostResult(label)
        self.started = False
        self.ended = False

    @property
    def ok(self) -> bool:
        return not self.ended or self.result.ok


class ExecJob(Job):
    """Python code on a gateway per host; each value sent is an output line."""

    def __init__(self, args: Args, sink: LineSink) -> None:
        super().__init__(args, sink)
        self._states = [_ExecState(target.label) for target in self.targets]

    @property
    def title(self) -> str:
        return "exec " + (self.args.remote_command.strip().splitlines() or [""])[0]

    async def open(self) -> None:
        pass  # gateways start in run(), each host on its own

    def watched(self) -> list[tuple[str, Watched]]:
        return [(state.result.host, state) for state in self._states]

    def results(self) -> list[HostResult]:
        return [state.result for state in self._states]

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            for index, (target, state) in enumerate(zip(self.targets, self._states, strict=True)):
                tasks.create_task(self._one(target, state, f"h{index}"))

    async def _one(self, target: Target, state: _ExecState, gateway_id: str) -> None:
        result = state.result
        result.start = time.time()
        state.started = True
        gateway: asyncgw.Gateway | None = None
        try:
            spec = gateway_spec(target, self.args.options, gateway_id, self.args.python)
            try:
                gateway = await self.group.makegateway(spec)
            except Exception as exc:
                result.error = _describe(exc)
                return
            await self._execute(gateway, result)
        except asyncio.CancelledError:
            result.interrupted = True
            if gateway is not None:
                await gateway.kill()
            raise
        finally:
            result.end = time.time()
            state.ended = True

    async def _execute(self, gateway: asyncgw.Gateway, result: HostResult) -> None:
        channel = gateway.remote_exec(self.args.remote_command)
        try:
            async with asyncio.timeout(self.args.timeout):
                async for item in channel:
                    text = item if isinstance(item, str) else repr(item)
                    result.stdout += text + "\n"
                    self.sink.item(result.host, text)
            result.exit_code = 0
        except asyncgw.RemoteError as exc:
            result.exit_code = 1
            result.stderr = exc.formatted
        except TimeoutError:
            result.timeouted = True
            await gateway.kill()
        except Exception as exc:
            result.error = _describe(exc)
            await gateway.kill()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


JOBS: dict[str, type[Job]] = {"run": RunJob, "put": PutJob, "get": GetJob, "exec": ExecJob}


def make_job(args: Args, sink: LineSink) -> Job:
    """The job for ``args.command``."""
    return JOBS[args.command](args, sink)
