"""A shell command run for :class:`asyncgw.fleet.Remote` through a gateway.

Shipped as source by ``gateway.remote_exec(this_module)`` and run with the
worker's blocking ``channel``: stdlib only, Python 3.9 syntax.

The conversation (local side ``L``, this side ``R``)::

    L: (cmd, {"kill_grace": seconds, "keep_stdin": bool})
    R: ("pid", pid)                       once the shell has started
    R: ("o", bytes) / ("e", bytes)        output as it comes, per stream
    R: ("k", None)                        it had to be SIGKILLed
    R: ("x", exit_status)                 the end: the shell's exit status,
                                          or -signal if a signal ended it
    L: "kill"                             at any time: stop it

The command runs under ``/bin/sh -c`` in a session (and so a process group)
of its own, with no input. "kill", or the channel closing (the caller went
away, or cancelled), sends SIGTERM to the whole group and SIGKILL after
``kill_grace`` seconds, so nothing the command started outlives it.

With ``keep_stdin`` the command's input is a pipe that stays open, empty,
until the command is stopped, when it is closed first: this is how the
fleet's tree relays ``ssh`` to a leaf host, whose command stops when its
input ends (see ``asyncgw.fleet.process``).

No orphans: the command never outlives this interpreter, however it ends
(asked to exit, SIGTERM, SIGKILL, or its input gone because the link to
the caller was lost, when the worker leaves with ``os._exit``). The only
writer of the command's input pipe is this process, so the pipe's end is
the sign of its death, which no signal handler or exit hook would see
after a SIGKILL. Without ``keep_stdin`` the command runs under
:data:`GUARDED`: a watcher subshell in the command's group waits for that
end and stops the group (SIGTERM, SIGKILL after the grace period), while
the command itself reads ``/dev/null``. With ``keep_stdin`` the command
(a relayed ``ssh``) reads that pipe itself and stops when it ends. Only
POSIX ``sh`` and process groups are needed, so this holds on Linux, macOS
and the BSDs alike; ``PR_SET_PDEATHSIG`` was not used: it is Linux-only,
reaches only the direct child (not what the shell starts), and fires when
the *thread* that forked exits, and the worker forks from its threads. A
process that leaves the group (``setsid``, a daemon) is not followed, nor
is what a command left behind after ending by itself (``nohup ... &``).
"""

import os
import shlex
import signal
import subprocess
import threading
import time
from typing import Any

#: Bytes per read from the command's output: large reads are fewer
#: messages, which is what output throughput costs on both sides.
CHUNK = 256 * 1024

#: How the command runs without ``keep_stdin``: a watcher subshell takes the
#: shell's input (the pipe only this interpreter writes, and never does)
#: and the command reads /dev/null. When the input ends and the shell (or
#: the command it became by ``exec``) still runs, this interpreter is gone
#: without having stopped it: the watcher sends SIGTERM to the group, then
#: SIGKILL once the shell has ended or after the grace period. If the shell
#: has ended, the command finished by itself and the watcher just leaves.
#: The shell waits for its foreground command on SIGTERM (the trap), so
#: the command gets its grace period. It costs a fork per command.
GUARDED = (
    "exec 3<&0; {{ while read -r _; do :; done; kill -0 $$ 2>/dev/null || exit 0; "
    "trap '' TERM; kill -TERM 0; n={ticks}; "
    'while [ "$n" -gt 0 ] && kill -0 $$ 2>/dev/null; do sleep 0.1; n=$((n - 1)); done; '
    "kill -KILL 0; }} <&3 >/dev/null 2>&1 & exec 3<&-; trap 'exit 143' TERM; "
    "eval {command} </dev/null"
)


def guarded(cmd: str, grace: float) -> str:
    """The command line that runs ``cmd`` under :data:`GUARDED`."""
    return GUARDED.format(ticks=max(1, round(grace * 10)), command=shlex.quote(cmd))


def _pump(channel: Any, stream: Any, tag: str) -> None:
    fd = stream.fileno()
    while True:
        data = os.read(fd, CHUNK)
        if not data:
            return
        try:
            channel.send((tag, data))
        except Exception:
            return  # the caller went away; keep draining so the command is not blocked


def _stop(channel: Any, process: Any, grace: float, ended: Any) -> None:
    """Input closed, SIGTERM to the command's group; SIGKILL if it has
    not ended in time."""
    if process.stdin is not None:
        # A relayed ssh: the end of its input stops the leaf's command, and
        # then ssh ends with its status. Signals only if that takes too long.
        try:
            process.stdin.close()
        except OSError:
            pass
        if ended.wait(grace):
            return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        if wait is None:
            try:
                channel.send(("k", None))
            except Exception:
                pass
        elif _group_ends(process.pid, ended, wait):
            return


def _group_ends(pgid: int, ended: Any, timeout: float) -> bool:
    """Whether the shell has ended and its whole group with it, within
    ``timeout`` seconds. The shell ending is not enough: a child it had
    just forked when SIGTERM came may still run the shell's code, with the
    shell's TERM trap, and lose the signal as it resets the trap to exec
    the command (dash does); that command would outlive the stop."""
    deadline = time.monotonic() + timeout
    if not ended.wait(timeout):
        return False
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(0.02, remaining))


def _watch(channel: Any, process: Any, grace: float, ended: Any) -> None:
    """Wait for "kill" or the channel's end, whichever first, then stop
    the command unless it has ended by itself."""
    try:
        while channel.receive() != "kill":
            pass
    except Exception:
        pass  # closed: the caller is gone or cancelled
    if not ended.is_set():
        _stop(channel, process, grace, ended)


def run(channel: Any) -> None:
    cmd, options = channel.receive()
    grace = float(options.get("kill_grace", 2.0))
    keep_stdin = bool(options.get("keep_stdin"))
    process = subprocess.Popen(
        cmd if keep_stdin else guarded(cmd, grace),
        shell=True,
        # Both ways, a pipe only we hold: its end is our death (see above).
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    guard = process.stdin
    if not keep_stdin:
        process.stdin = None  # not the command's input: _stop signals instead
    ended = threading.Event()
    channel.send(("pid", process.pid))
    pumps = [
        threading.Thread(target=_pump, args=(channel, process.stdout, "o"), daemon=True),
        threading.Thread(target=_pump, args=(channel, process.stderr, "e"), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    watcher = threading.Thread(target=_watch, args=(channel, process, grace, ended), daemon=True)
    watcher.start()
    status = process.wait()
    ended.set()
    if guard is not None:
        try:
            guard.close()  # the shell has ended: its watcher leaves
        except OSError:
            pass
    for pump in pumps:
        pump.join()
    channel.send(("x", status))


if __name__ == "__channelexec__":
    run(channel)  # type: ignore[name-defined]  # noqa: F821
