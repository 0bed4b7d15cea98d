"""``asyncgw``, the command line: run, put, get, exec (and serve) on many hosts.

A thin shell over :mod:`asyncgw.fleet` and the gateways: :mod:`.args`
parses the line, :mod:`.targets` turns ``HOSTS`` into places,
:mod:`.commands` runs the library call, :mod:`.display` shows progress
and :mod:`.summary` the grouped result; :mod:`.results` holds the
per-host results and the exit status rules.

:func:`main` is the console script ``asyncgw`` and ``python -m asyncgw``.
Ctrl-C (or SIGTERM) stops the remote commands, prints what arrived and
exits with 130 (143); a third one exits at once, leaving whatever has not
stopped yet.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from .args import Args, UsageError, _find_command, parse
from .commands import make_job
from .display import Display
from .results import exit_status

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return
    its exit status (see :mod:`.results`; 2 for bad usage).

    :raises SystemExit: (0) after ``--help``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        command, index = _find_command(argv)
        if command == "map":  # a pool, not a fleet job: its own module
            from .map import main as map_main

            return map_main(argv[:index] + argv[index + 1 :])
        args = parse(argv)
        if args.command == "serve":
            from .. import server
            from .._certgen import make_cert

            server.main(args.serve_argv, make_cert=make_cert)
            return 0
        return asyncio.run(_run(args))
    except UsageError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    except KeyboardInterrupt:  # before the handlers were up, or a third Ctrl-C
        return 128 + signal.SIGINT
    except BrokenPipeError:  # the reader went away (| head): no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


async def _run(args: Args) -> int:
    """Run ``args``' command with live display, summary and signal handling."""
    display = Display(args)
    job = make_job(args, display)
    loop = asyncio.get_running_loop()
    received: list[int] = []

    async def body() -> None:
        await job.open()
        display.start(job.title, job.watched())
        await job.run()

    task = loop.create_task(body())

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            display.note(f"{signal.Signals(signum).name}: stopping the remote commands")
            task.cancel()
        elif len(received) == 2:  # stopping is bounded by the kill grace period
            display.note("still stopping (SIGKILL after the grace period); again to quit now")
        else:  # quit, whatever is left running
            raise KeyboardInterrupt

    try:
        for handled in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(handled, on_signal, handled)
        try:
            await asyncio.wait([task])
        finally:
            for handled in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(handled)
        if not task.cancelled() and task.exception() is not None:
            display.stop()
            task.result()  # raises it
    finally:
        await job.close()
    results = job.results()
    signum = received[0] if received else None
    display.finish(results, signum)
    return exit_status(results, signum)
