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
import logging
import os
import re
import shlex
import signal
import sys
import time
from typing import TYPE_CHECKING

from .._bootstrap import python_argv
from .._errors import SpecError, TimeoutError
from ._base import OpenContext, StreamSink
from .cmd import FirstOutput, start_timeout
from .popen import PopenTransport, start_process

if TYPE_CHECKING:
    from .._spec import XSpec

__all__ = ["DEFAULT_QUEUE_TIMEOUT", "SlurmTransport", "open_slurm", "slurm_argv"]

log = logging.getLogger("asyncgw.slurm")

#: Seconds a gateway may wait in Slurm's queue, unless ``slurm_queue_timeout`` says.
DEFAULT_QUEUE_TIMEOUT = 600.0
#: Seconds, once srun is told to end, before it is killed: srun needs a
#: moment to tell slurmctld and slurmstepd that the step is over.
KILL_GRACE = 2.0

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
    argv = ["srun", "--unbuffered", "-N1", "-n1"]
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

    #: The job id srun named, once it did.
    job: str | None = None
    #: srun's latest words on waiting, or None once resources are granted.
    pending: str | None = None

    def _stderr_lines(self) -> list[str]:
        return b"".join(self._protocol.stderr_tail).decode("utf-8", "replace").splitlines()

    def diagnosis(self) -> str:
        """srun's exit status and stderr, led by Slurm's cause where it named one."""
        base = super().diagnosis()
        causes = [match.group(0) for line in self._stderr_lines() if (match := _ENDED.search(line))]
        if causes:
            return f"ended by Slurm: {causes[0]}; {base}"
        return base

    async def kill(self) -> None:
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


class _QueueWatch:
    """Reads srun's stderr as it comes (besides the transport's own
    forwarding) for word of the queue; wakes ``first`` on each change."""

    def __init__(self, transport: SlurmTransport, first: FirstOutput) -> None:
        self.transport = transport
        self.first = first
        self.since: float | None = None
        self._partial = b""
        protocol = transport._protocol
        forward = protocol.pipe_data_received

        def pipe_data_received(fd: int, data: bytes | memoryview) -> None:
            forward(fd, data)
            if fd == 2:
                self._feed(bytes(data))

        # An instance attribute: asyncio looks the method up at each call.
        protocol.pipe_data_received = pipe_data_received  # type: ignore[method-assign]
        self._feed(b"".join(protocol.stderr_tail))  # what came before this hook

    def _feed(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            for pattern in _PENDING:
                match = pattern.search(line)
                if match:
                    self.transport.job = match.group(1)
                    reason = match.group(2) if match.lastindex and match.lastindex >= 2 else None
                    what = "step" if "step" in line else "job"
                    self.transport.pending = f"{what} of job {match.group(1)} waiting" + (
                        f" ({reason})" if reason else ""
                    )
                    if self.since is None:
                        self.since = time.monotonic()
                    self.first.event.set()
            match = _GRANTED.search(line)
            if match:
                self.transport.job = match.group(1) or match.group(2)
                self.transport.pending = None
                self.since = None
                self.first.event.set()


async def _squeue(job: str) -> str:
    """``squeue``'s state and reason for ``job``, or why there is none."""
    try:
        process = await asyncio.create_subprocess_exec(
            "squeue", "-h", "-j", job, "-o", "%T %r",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        async with asyncio.timeout(10):
            output, _ = await process.communicate()
    except (OSError, builtins.TimeoutError) as exc:
        return f"squeue failed: {exc}"
    text = output.decode("utf-8", "replace").strip()
    if not text:
        return "not in squeue"
    state, _, reason = text.partition(" ")
    return f"state {state}, reason {reason}" if reason else f"state {state}"


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
    first = FirstOutput(sink)
    transport = await start_process(argv, spec, first, bootstrap)
    transport.__class__ = SlurmTransport  # same state; srun-aware diagnosis and kill
    assert isinstance(transport, SlurmTransport)
    watch = _QueueWatch(transport, first)
    deadline = time.monotonic() + start
    logged = False
    try:
        while not first.started and not transport._protocol.exited.done():
            if watch.since is not None:
                deadline = watch.since + queue
                if not logged:
                    logged = True
                    log.info("%s waits for resources: %s", spec, transport.pending)
            elif logged:  # granted after waiting: the start timeout begins now
                logged = False
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
        pending, job = transport.pending, transport.job
        state = await _squeue(job) if job and pending else ""
        silence = first.silence(transport)
        await asyncio.shield(transport.kill())
        if pending:
            raise TimeoutError(
                f"{spec} waited {queue}s in Slurm's queue without starting: {pending}"
                f" (squeue: {state}); the step was cancelled. Raise"
                f" slurm_queue_timeout=SECONDS to wait longer"
            ) from None
        raise TimeoutError(f"{spec} did not start within {start}s: {silence}") from None
    except BaseException:
        await asyncio.shield(transport.kill())
        raise
    first.detach(transport)
    return transport
