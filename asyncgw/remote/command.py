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
"""

import os
import signal
import subprocess
import threading
from typing import Any

#: Bytes per read from the command's output.
CHUNK = 65536


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
        elif ended.wait(wait):
            return


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
    process = subprocess.Popen(
        cmd,
        shell=True,
        stdin=subprocess.PIPE if options.get("keep_stdin") else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
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
    for pump in pumps:
        pump.join()
    channel.send(("x", status))


if __name__ == "__channelexec__":
    run(channel)  # type: ignore[name-defined]  # noqa: F821
