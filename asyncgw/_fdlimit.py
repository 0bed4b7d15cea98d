"""File descriptors: room for the gateways a group starts.

Every gateway whose worker is a local process costs this process 3
descriptors (its stdin, output and stderr pipes), and a 4th once the
blocking facade writes to it from a thread (the router's duplicate of the
stdin pipe): :data:`FDS_PER_WORKER` counts 4. Many systems start processes
with a soft ``RLIMIT_NOFILE`` of 1024 under a far higher hard limit, which
would stop a group near 250 workers. So before a group starts gateways,
:func:`ensure_room` counts the descriptors in use and, if the new ones do not
fit under the soft limit, raises it toward the hard limit once, as Go's
runtime does at start (at most to :data:`MAX_SOFT` unless more is needed).
Past the hard limit nothing is started: one :class:`GatewayError` names the
limit and how many of the gateways fit. :func:`exhausted_error` turns a
descriptor shortage met anyway (others opened descriptors meanwhile) into
that same error.

Invariants: the soft limit is only ever raised, never lowered, in this
process; :func:`original_soft_limit` is the value it had before the first
raise. Local popen workers (and fork servers) set that value back for
themselves at start (see ``_bootstrap``), so code in them sees the usual
limit; other children (``ssh``, ``cmd`` commands, the user's own
subprocesses) inherit the raised one.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._errors import GatewayError

if TYPE_CHECKING:
    from ._spec import XSpec

try:
    import resource
except ImportError:  # Windows: no such limit to manage
    resource = None  # type: ignore[assignment]

__all__ = [
    "FDS_PER_WORKER",
    "ensure_room",
    "exhausted_error",
    "fds_in_use",
    "is_exhaustion",
    "original_soft_limit",
]

#: Descriptors a gateway with a local worker process keeps open here.
FDS_PER_WORKER = 4
#: Descriptors a gateway over a socket keeps (the socket and the router's
#: duplicate); ``ssh`` connections are shared, so this is generous for them.
FDS_PER_SOCKET = 2
#: Descriptors kept free for everything else (fork servers, their sockets,
#: the fork requests in flight, 3 each; the loop's own; files the caller
#: opens meanwhile).
RESERVE = 64
#: The highest soft limit asked for when raising it, unless a group needs
#: more: a soft limit near the hard one (often 2**20) makes code that walks
#: every possible descriptor slow.
MAX_SOFT = 65536
#: Transports whose gateways start a worker process on this machine.
LOCAL_PROCESS_TRANSPORTS = frozenset({"popen", "cmd", "docker", "kubectl", "sudo"})

_original_soft: int | None = None


def original_soft_limit() -> int | None:
    """The soft ``RLIMIT_NOFILE`` before asyncgw raised it; None if it never did."""
    return _original_soft


def fds_in_use() -> int | None:
    """How many descriptors this process has open; None if it cannot tell."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(directory)) - 1  # listdir's own descriptor
        except OSError:
            continue
    return None


def cost(spec: XSpec) -> int:
    """Descriptors ``spec``'s gateway keeps open in this process."""
    transport = spec.transport
    if transport == "via":  # a channel of another gateway
        return 0
    if transport in LOCAL_PROCESS_TRANSPORTS:
        return FDS_PER_WORKER
    return FDS_PER_SOCKET


def ensure_room(specs: Iterable[XSpec]) -> None:
    """Make room under ``RLIMIT_NOFILE`` for the gateways of ``specs``:
    raise the soft limit if they need it and the hard limit allows.

    :raises GatewayError: if they do not fit under the hard limit; its
        message names the limit and how many of them fit.
    """
    if resource is None:
        return
    specs = list(specs)
    needed = sum(cost(spec) for spec in specs)
    if not needed:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    if hard == soft and len(specs) == 1:
        return  # nothing to raise; a shortage shows as EMFILE (exhausted_error)
    in_use = fds_in_use()
    if in_use is None:
        return
    total = in_use + needed + RESERVE
    if total <= soft:
        return
    if hard != resource.RLIM_INFINITY and total > hard:
        raise _limit_error(specs, hard, in_use, "the hard limit")
    _raise_soft(soft, hard, total)


def _raise_soft(soft: int, hard: int, total: int) -> None:
    global _original_soft
    target = max(total, MAX_SOFT)
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # e.g. above the kernel's nr_open: ask for less
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (total, hard))
        except (ValueError, OSError):
            return  # a shortage then shows as EMFILE (exhausted_error)
    if _original_soft is None:
        _original_soft = soft


def _limit_error(
    specs: list[XSpec],
    limit: int,
    in_use: int,
    which: str,
    outcome: str = "Nothing was started.",
) -> GatewayError:
    """The one error for gateways that do not fit under ``limit``."""
    room = limit - in_use - RESERVE
    fit = 0
    for spec in specs:
        room -= cost(spec)
        if room < 0:
            break
        fit += 1
    if fit < len(specs):
        fitting = f"so only {fit} of them fit"
    else:  # descriptors were opened meanwhile, or a transport needs more
        fitting = f"so by that count all would fit, but fewer than {len(specs)} did"
    return GatewayError(
        f"no room for {len(specs)} gateway{'s' if len(specs) != 1 else ''} under this "
        "process's file descriptor limit: "
        f"RLIMIT_NOFILE (ulimit -n) is {limit} ({which}), {in_use} are "
        f"in use, and each local worker needs {FDS_PER_WORKER} (with {RESERVE} kept "
        f"free), {fitting}. Raise the hard limit (ulimit -Hn, "
        f"LimitNOFILE= in a systemd unit) or start fewer gateways. {outcome}"
    )


def exhausted_error(error: BaseException, specs: Iterable[XSpec]) -> GatewayError | None:
    """The limit error for a group start that failed with ``error``, if
    ``error`` is (or was caused by) running out of descriptors; else None.
    Call it once what was started is gone: the count in use is then the
    baseline."""
    if resource is None or not is_exhaustion(error):
        return None
    specs = list(specs)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = fds_in_use() or 0
    limit = soft if soft != resource.RLIM_INFINITY else in_use
    which = "the hard limit" if soft == hard else "the soft limit, which asyncgw could not raise"
    outcome = "Everything started was killed."
    return _limit_error(specs, limit, in_use, which, outcome)


def is_exhaustion(error: BaseException | None) -> bool:
    """Whether ``error`` is, or was caused by, running out of descriptors."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE):
            return True
        error = error.__cause__ or error.__context__
    return False
