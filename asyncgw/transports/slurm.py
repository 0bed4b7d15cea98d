"""slurm: a worker in a Slurm job step, started by ``srun`` on its stdin/stdout.

``slurm=OPTIONS`` runs ``srun --unbuffered -N1 -n1 OPTIONS PYTHON -c LOADER``;
OPTIONS are srun's own, split like a shell would (``slurm=--partition=debug
--time=10``); ``slurm`` alone asks for a step anywhere. ``python=`` names the
interpreter on the node (default: this one's path, as on a shared file
system).

- Outside an allocation each gateway is a job of its own, with one step.
- Inside one (``SLURM_JOB_ID`` set: under ``salloc``, ``sbatch``, or in a
  worker that is itself a step) each gateway is a step of that job:
  ``--jobid`` and ``--overlap`` are added, so that many idle-most-of-the-time
  gateways share the job's CPUs instead of each waiting for one of its own
  (Slurm holds a step back until its CPUs are free, ``--exact`` or not).
  ``--jobid`` or ``--exclusive`` among OPTIONS turn this off.

Invariants:

- ``--unbuffered`` is always given: srun otherwise forwards output by lines,
  and the worker's greeting has none (see :mod:`.cmd`).
- Waiting in the queue is not a failure to start. While srun reports the job
  (or step) pending, the start is bounded by ``slurm_queue_timeout`` (default
  :data:`DEFAULT_QUEUE_TIMEOUT`), not by ``connect_timeout``; the error then
  names the job, its state and reason as ``squeue`` gives them. Once
  resources are granted, ``connect_timeout`` starts afresh.
- srun runs as a local child like a popen worker: ending it (end of input,
  SIGTERM) ends the step, and a step's worker exits at the end of its input,
  so a caller killed outright leaves no step behind either.
- A step ended by Slurm (``scancel``, time limit, node failure) ends the
  gateway with :class:`~asyncgw.GatewayLost` naming that cause, from srun's
  and slurmstepd's own words.

The transport imports nothing from the fleet layer: grouping gateways over
an allocation's nodes is :mod:`asyncgw.slurm`'s work.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._bootstrap import python_argv
from .._errors import SpecError, TimeoutError
from ._base import OpenContext, StreamSink
from .cmd import FirstOutput, start_timeout
from .popen import PopenTransport, _Protocol, start_process

if TYPE_CHECKING:
    from .._spec import XSpec

__all__ = ["DEFAULT_QUEUE_TIMEOUT", "SlurmTransport", "open_slurm", "slurm_argv"]

log = logging.getLogger("asyncgw.slurm")

#: Seconds a gateway may wait in Slurm's queue, unless ``slurm_queue_timeout`` says.
DEFAULT_QUEUE_TIMEOUT = 600.0
#: Seconds, once srun is told to end, before it is killed: srun needs a
#: moment to tell slurmctld and slurmstepd that the step is over.
KILL_GRACE = 2.0
#: Seconds to wait for squeue's word on a job whose step ended unasked.
SQUEUE_WAIT = 2.0

# srun's own words (Slurm 20.11 to 23.x) for a job or step held back, and
# for resources granted after that.
_PENDING = (
    re.compile(r"job (\d+) queued and waiting for resources", re.IGNORECASE),
    re.compile(r"Job (\d+) step creation temporarily disabled, retrying(?: \((.*)\))?"),
    re.compile(r"Job (\d+) step creation still disabled, retrying(?: \((.*)\))?"),
)
_GRANTED = re.compile(
    r"job (\d+) has been allocated resources|Step created for (?:StepId=|job )(\d+)",
    re.IGNORECASE,
)
# How Slurm words the end of a step it ended itself.
_ENDED = re.compile(
    r"(\*\*\* (?:STEP|JOB) \S+ ON \S+ (?:CANCELLED|DUE TO TIME LIMIT|DUE TO NODE FAILURE|"
    r"DUE TO PREEMPTION)[^*]*\*\*\*)|(Job step aborted[^\n]*)|(job \d+ (?:cancelled|"
    r"has been revoked)[^\n]*)|(Force Terminated[^\n]*)",
    re.IGNORECASE,
)


def _has_option(options: list[str], *names: str) -> bool:
    return any(
        option == name or option.startswith(name + "=") for option in options for name in names
    )


def slurm_argv(spec: XSpec, environ: dict[str, str] | None = None) -> list[str]:
    """The srun command line for ``spec``, ending in the worker's loader.

    :param environ: where to look for ``SLURM_JOB_ID`` (default: ours).
    :raises SpecError: for options that cannot be split.
    """
    value = spec.slurm
    try:
        options = shlex.split(value) if isinstance(value, str) else []
    except ValueError as exc:
        raise SpecError(f"key 'slurm' of spec {str(spec)!r}: {exc}") from None
    environ = os.environ if environ is None else environ  # type: ignore[assignment]
    assert environ is not None
    # -v: srun then names the job and step (its verbose lines are not forwarded).
    argv = ["srun", "--unbuffered", "-v", "-N1", "-n1"]
    job = environ.get("SLURM_JOB_ID")
    if job and not _has_option(options, "--jobid", "--exclusive"):
        argv += [f"--jobid={job}"]
        if not _has_option(options, "--overlap"):
            argv += ["--overlap"]
    python = shlex.split(spec.python) if spec.python else [sys.executable]
    return python_argv([*argv, *options, *python])


def queue_timeout(spec: XSpec) -> float:
    """``slurm_queue_timeout`` of ``spec`` in seconds.

    :raises SpecError: if it is not a number.
    """
    value = spec.slurm_queue_timeout
    if value is None:
        return DEFAULT_QUEUE_TIMEOUT
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SpecError(f"key 'slurm_queue_timeout' wants seconds, not {value!r}") from None


class SlurmTransport(PopenTransport):
    """srun's process, with what srun said about the queue and the step's end."""

    _protocol: _SrunProtocol

    #: Whether this side is ending the step (then its end needs no word from Slurm).
    ending = False

    @property
    def srun(self) -> _SrunStderr:
        """What srun said: job and step ids, waiting."""
        return self._protocol.srun

    def slurm_ended(self) -> str | None:
        """srun's or slurmstepd's words that Slurm ended the step, if any."""
        lines = b"".join(self._protocol.stderr_tail).decode("utf-8", "replace").splitlines()
        causes = [match.group(0) for line in lines if (match := _ENDED.search(line))]
        return causes[0] if causes else None

    def diagnosis(self) -> str:
        """srun's exit status and stderr, led by Slurm's cause where it named one."""
        base = super().diagnosis()
        cause = self.slurm_ended()
        return f"ended by Slurm: {cause}; {base}" if cause else base

    def close_input(self) -> None:
        self.ending = True
        super().close_input()

    async def kill(self) -> None:
        self.ending = True
        # SIGTERM first, to srun only: it ends the step through slurmctld
        # (a SIGKILL to its group at once would leave the step to time out).
        if self.pid is not None and not self._protocol.exited.done():
            try:
                os.kill(self.pid, signal.SIGTERM)
                async with asyncio.timeout(KILL_GRACE):
                    await asyncio.shield(self._protocol.exited)
            except (ProcessLookupError, builtins.TimeoutError):
                pass
        await super().kill()


#: srun's verbose lines (``-v``, given for the job and step ids they
#: carry) that are not forwarded: the options block and plug-in chatter.
_VERBOSE = re.compile(
    r"srun: (?:defined options|end of defined options|-{5,}|[\w-]+ +: |jobid \d+: |"
    r"launching StepId=|Complete StepId=|[a-z_]+/[a-z_]+: )"
)
_JOBID = re.compile(r"srun: jobid (\d+): ")
_LAUNCHING = re.compile(r"srun: launching StepId=(\d+)\.(\d+)")


class _SrunStderr:
    """srun's stderr, read line by line as it comes: the job and step ids and
    the queue's news are taken from it (``changed`` is called on news), and
    all but srun's verbose lines are passed on."""

    def __init__(self) -> None:
        self.job: str | None = None
        self.step: str | None = None
        #: srun's words on waiting, or None while not waiting.
        self.pending: str | None = None
        #: When the waiting began (monotonic), or None.
        self.since: float | None = None
        self.changed: Callable[[], None] = lambda: None
        self._partial = b""

    def feed(self, data: bytes) -> bytes:
        """The part of ``data`` to pass on; srun's own lines are read whole,
        anything else (the worker's stderr) passes at once."""
        *lines, self._partial = (self._partial + data).split(b"\n")
        kept = [raw + b"\n" for raw in lines if not self._read(raw.decode("utf-8", "replace"))]
        if self._partial and not b"srun: ".startswith(self._partial[:6]):
            kept.append(self._partial)
            self._partial = b""
        return b"".join(kept)

    def _read(self, line: str) -> bool:
        """Take what ``line`` says; whether it is verbose chatter to drop."""
        for pattern in _PENDING:
            match = pattern.search(line)
            if match:
                self.job = match.group(1)
                reason = match.group(2) if match.lastindex and match.lastindex >= 2 else None
                what = "a step of job" if "step" in line else "job"
                self.pending = f"{what} {self.job} waiting for resources" + (
                    f" ({reason})" if reason else ""
                )
                if self.since is None:
                    self.since = time.monotonic()
                self.changed()
                return False
        match = _GRANTED.search(line) or _JOBID.match(line)
        if match:
            self.job = next(group for group in match.groups() if group)
            if self.since is not None:
                self.pending = self.since = None
                self.changed()
        match = _LAUNCHING.match(line)
        if match:
            self.job, self.step = match.group(1), match.group(2)
        return bool(_VERBOSE.match(line))


class _SrunProtocol(_Protocol):
    """popen's pipe reader, with srun's stderr read (and filtered) first."""

    def __init__(self, sink: StreamSink) -> None:
        super().__init__(sink)
        self.srun = _SrunStderr()

    def pipe_data_received(self, fd: int, data: bytes | memoryview) -> None:
        if fd == 2:
            data = self.srun.feed(bytes(data))
            if not data:
                return
        super().pipe_data_received(fd, data)


class _LossSink:
    """The gateway's sink, told of the step's end only once Slurm has been
    asked for the job's state: so that a step Slurm ended (``scancel``)
    is lost with that cause in the message."""

    def __init__(self, sink: StreamSink) -> None:
        self.sink = sink
        self.hello = getattr(sink, "hello", None)  # what FirstOutput waits for
        self.transport: SlurmTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.reported = False

    def data_received(self, data: bytes | memoryview) -> None:
        self.sink.data_received(data)

    def pause_writing(self) -> None:
        self.sink.pause_writing()

    def resume_writing(self) -> None:
        self.sink.resume_writing()

    def connection_lost(self, reason: str) -> None:
        transport = self.transport
        if self.reported:  # popen's reader may report twice (timer, then exit)
            return
        self.reported = True
        job = None if transport is None else transport.srun.job
        # Only for a step that Slurm ended (srun says so): not for one that
        # ended as asked (end of input, TERMINATE, a kill from here).
        if transport is None or job is None or transport.ending or not transport.slurm_ended():
            self.sink.connection_lost(reason)
            return
        task = asyncio.get_running_loop().create_task(self._report(reason, job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _report(self, reason: str, job: str) -> None:
        # A job being ended reads COMPLETING at first: ask again for what
        # ended it (CANCELLED, TIMEOUT, NODE_FAIL...), a little while.
        deadline = time.monotonic() + SQUEUE_WAIT
        while True:
            state = await _job_state(job, timeout=SQUEUE_WAIT)
            if not state.startswith("COMPLETING") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)  # a poll of Slurm's state, not a synchronisation
        self.sink.connection_lost(f"{reason}; Slurm says job {job} is {state}")


async def _job_state(job: str, timeout: float = 10.0) -> str:
    """Slurm's state and reason for ``job`` (``scontrol show job``: it names
    a cancelled job CANCELLED while squeue still says COMPLETING)."""
    try:
        process = await asyncio.create_subprocess_exec(
            "scontrol", "show", "job", "--oneliner", job,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            async with asyncio.timeout(timeout):
                output, _ = await process.communicate()
        except builtins.TimeoutError:
            process.kill()
            await process.wait()
            return f"unknown (scontrol did not answer within {timeout}s)"
        except BaseException:  # cancelled: leave no scontrol behind
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise
    except OSError as exc:
        return f"unknown (scontrol failed: {exc})"
    text = output.decode("utf-8", "replace")
    fields = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if sep:
            fields[key] = value
    if "JobState" not in fields:
        return f"unknown ({text.strip()[:200]})"
    reason = fields.get("Reason", "None")
    return fields["JobState"] + ("" if reason == "None" else f", reason {reason}")


async def open_slurm(
    spec: XSpec, sink: StreamSink, bootstrap: bytes, context: OpenContext
) -> PopenTransport:
    """Run srun for ``spec``, send its worker the bootstrap and wait, first in
    the queue (``slurm_queue_timeout``), then for the worker's first bytes
    (``connect_timeout``).

    :raises HostNotFound: if srun cannot be executed.
    :raises TimeoutError: for a step that waited in the queue too long
        (naming its state and reason), or that sent nothing in time.
    """
    argv = slurm_argv(spec)
    start, queue = start_timeout(spec), queue_timeout(spec)
    loss = _LossSink(sink)
    first = FirstOutput(loss)
    transport = await start_process(argv, spec, first, bootstrap, _SrunProtocol)
    transport.__class__ = SlurmTransport  # same state; srun-aware diagnosis and kill
    assert isinstance(transport, SlurmTransport)
    loss.transport = transport
    srun = transport.srun
    srun.changed = first.event.set
    deadline = time.monotonic() + start
    waiting = False
    try:
        while not first.started and not transport._protocol.exited.done():
            if srun.since is not None:
                deadline = srun.since + queue
                if not waiting:
                    waiting = True
                    log.info("%s waits for resources: %s", spec, srun.pending)
            elif waiting:  # granted after waiting: the start timeout begins now
                waiting = False
                deadline = time.monotonic() + start
            first.event.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise builtins.TimeoutError
            try:
                async with asyncio.timeout(remaining):
                    await first.event.wait()
            except builtins.TimeoutError:
                pass  # the deadline is checked above, with the queue's news
    except builtins.TimeoutError:
        pending, job = srun.pending, srun.job
        state = await _job_state(job) if job and pending else ""
        silence = first.silence(transport)
        await asyncio.shield(transport.kill())
        if pending:
            raise TimeoutError(
                f"{spec} waited {queue}s in Slurm's queue without starting: {pending}"
                f" (Slurm: {state}); the request was cancelled. Raise"
                f" slurm_queue_timeout=SECONDS to wait longer"
            ) from None
        raise TimeoutError(f"{spec} did not start within {start}s: {silence}") from None
    except BaseException:
        await asyncio.shield(transport.kill())
        raise
    first.detach(transport)
    return transport
