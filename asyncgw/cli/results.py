"""Per-host results of a command, their grouping and the exit status.

Every command ends with one :class:`HostResult` per host, whatever ran
there (a shell command, Python code, a copy). The summary groups hosts
whose results read the same (:func:`group_results`, clush's ``-b``); the
exit status is the worst host's (:func:`exit_status`); ``--json`` prints
:meth:`HostResult.to_json` for each host.

Exit status rules (the same as ``ssh``, ``pssh`` and ``timeout(1)`` use):

- 130 (128 + SIGINT) if the run was interrupted, 143 for SIGTERM;
- otherwise 255 if a host could not be reached or failed in another way
  than by its command's exit status (``error``);
- otherwise 124 if a host's command ran past ``--timeout``;
- otherwise the largest exit status among the hosts, 0 when all are ok.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..fleet import Process

__all__ = [
    "EXIT_ERROR",
    "EXIT_TIMEOUT",
    "Group",
    "HostResult",
    "exit_status",
    "from_process",
    "group_results",
]

EXIT_ERROR = 255
EXIT_TIMEOUT = 124

#: Order of the summary's groups: successes first, the worst last, next
#: to the final count.
_SEVERITY = {"ok": 0, "exit": 1, "interrupted": 2, "timeout": 3, "error": 4}


@dataclass
class HostResult:
    """What happened on one host.

    ``exit_code`` is the command's exit status (``128 + N`` for a local
    command killed by signal N), ``None`` if there is none; ``error`` the
    reason a host failed other than by its exit status (unreachable, a
    copy that failed), else ``None``.
    """

    host: str
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    timeouted: bool = False
    error: str | None = None
    start: float | None = None
    end: float | None = None
    #: Stopped by Ctrl-C (or never started because of it).
    interrupted: bool = False
    #: Bytes copied, for a put.
    transferred: int | None = None

    @property
    def status(self) -> str:
        """``ok``, ``exit`` (non-zero), ``timeout``, ``error`` or ``interrupted``."""
        if self.error is not None:
            return "error"
        if self.timeouted:
            return "timeout"
        if self.interrupted:
            return "interrupted"
        return "ok" if self.exit_code == 0 else "exit"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, object]:
        """The host's object in ``--json`` output."""
        return {
            "host": self.host,
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "timeouted": self.timeouted,
            "error": self.error,
            "start": self.start,
            "end": self.end,
        }


def _exit_code(code: int | None) -> int | None:
    # asyncio reports a local process killed by signal N as -N; shells say 128 + N.
    return 128 - code if code is not None and code < 0 else code


def from_process(host: str, process: Process) -> HostResult:
    """The result of a fleet process (``host`` is its label in the summary)."""
    interrupted = process.killed or not process.started or not process.ended
    return HostResult(
        host=host,
        exit_code=_exit_code(process.exit_code),
        stdout=process.stdout,
        stderr=process.stderr,
        timeouted=process.timeouted,
        error=(process.error_reason or "failed") if process.error else None,
        start=process.start_date,
        end=process.end_date,
        interrupted=interrupted and not process.timeouted,
        transferred=getattr(process, "transferred", None),
    )


def exit_status(results: list[HostResult], signum: int | None = None) -> int:
    """The exit status of the whole command: see the module docstring."""
    if signum is not None:
        return 128 + signum
    statuses = {result.status for result in results}
    if "error" in statuses:
        return EXIT_ERROR
    if "timeout" in statuses:
        return EXIT_TIMEOUT
    if "interrupted" in statuses:
        return 128 + signal.SIGINT
    codes = [result.exit_code for result in results]
    return max((code if code is not None else 1 for code in codes), default=0)


@dataclass
class Group:
    """Hosts whose results read the same: one block of the summary."""

    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    #: For ``error`` groups: the reason, or ``None`` when the hosts' reasons differ.
    error: str | None = None
    transferred: int | None = None
    results: list[HostResult] = field(default_factory=list)

    @property
    def hosts(self) -> list[str]:
        return [result.host for result in self.results]


def _kind(reason: str) -> str:
    """``HostNotFound`` for ``HostNotFound: cannot connect ...``."""
    head = reason.split(":", 1)[0]
    return head if head.isidentifier() else reason


def group_results(results: list[HostResult]) -> list[Group]:
    """Groups of hosts with the same status, exit status, output and
    bytes copied; hosts that failed with an error are grouped by the kind
    of error (their reasons often name the host). Successes come first,
    then the others by severity, each in the order of its first host."""
    groups: dict[tuple[object, ...], Group] = {}
    for result in results:
        status = result.status
        if status == "error":
            assert result.error is not None
            key: tuple[object, ...] = (status, _kind(result.error))
        else:
            key = (status, result.exit_code, result.stdout, result.stderr, result.transferred)
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(
                status,
                result.exit_code,
                result.stdout,
                result.stderr,
                error=result.error,
                transferred=result.transferred,
            )
        elif group.error != result.error:
            group.error = None
        group.results.append(result)
    return sorted(groups.values(), key=lambda group: _SEVERITY[group.status])
