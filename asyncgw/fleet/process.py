"""Processes: one command (or copy) on one host, with execo's fields.

A :class:`Process` runs as a task on the event loop. Its subclasses say
how to start the work, wait for its exit status and stop it:

- :class:`LocalProcess`: a shell command here;
- :class:`TransferProcess`: one host's part of a ``Put`` or ``Get``;
- in :mod:`.remoteprocess`, a shell command over SSH on a connection of
  the shared pool (no Python needed on the far side), through a gateway's
  interpreter (any transport), or relayed by an intermediate gateway.

Failures are data, as in execo: a process that could not start has
``error`` and ``error_reason``; one that ran past ``timeout`` was stopped
and has ``timeouted``; a non-zero exit status is ``exit_code``. ``ok``
says whether all went well, counting what the ``ignore_*`` flags ignore;
the ``nolog_*`` flags silence the warning logged for each failure.

Stopping (a timeout, :meth:`Process.kill`, or cancelling the task that
awaits the process) stops the remote command and what it started: its
process group gets SIGTERM, then SIGKILL after ``kill_grace`` seconds.

Output of any size: each stream keeps at most ``max_output`` bytes (the
last ones; see :mod:`.output`) and counts all of them, in time linear in
the output, while handlers and listeners get every line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .hosts import Host
from .output import DEFAULT_MAX_OUTPUT, Captured

if TYPE_CHECKING:
    from .._gateway import Gateway

__all__ = [
    "STDERR",
    "STDOUT",
    "LocalProcess",
    "OutputHandler",
    "Process",
    "TransferProcess",
]

logger = logging.getLogger("asyncgw.fleet")

STDOUT = "stdout"
STDERR = "stderr"

#: An output handler: ``handler(process, stream, line)`` for each line; a
#: file-like object (its ``write`` gets each line); or a path, appended to.
OutputHandler = Callable[["Process", str, str], object] | Any

#: Seconds to wait for a stopped command to report its end before giving up on it.
_STOP_SLACK = 3.0


class Process:
    """One command on one host; start it, wait for it, read its fields.

    ``host`` is a :class:`Host`, a gateway, or ``None`` for a local one.
    ``max_output`` is the bytes of each stream kept in :attr:`stdout` and
    :attr:`stderr` (the last ones, :data:`DEFAULT_MAX_OUTPUT` by default;
    ``None`` keeps all); :attr:`captured` counts what came in all.
    """

    #: What kind of process, in reprs and reports.
    kind: ClassVar[str] = "Process"

    def __init__(
        self,
        cmd: str,
        host: Host | Gateway | None = None,
        *,
        timeout: float | None = None,
        ignore_exit_code: bool = False,
        ignore_timeout: bool = False,
        ignore_error: bool = False,
        nolog_exit_code: bool = False,
        nolog_timeout: bool = False,
        nolog_error: bool = False,
        stdout_handlers: list[OutputHandler] | None = None,
        stderr_handlers: list[OutputHandler] | None = None,
        kill_grace: float = 2.0,
        max_output: int | None = DEFAULT_MAX_OUTPUT,
        name: str | None = None,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self.cmd = cmd
        self.host = host
        self.timeout = timeout
        self.ignore_exit_code = ignore_exit_code
        self.ignore_timeout = ignore_timeout
        self.ignore_error = ignore_error
        self.nolog_exit_code = nolog_exit_code
        self.nolog_timeout = nolog_timeout
        self.nolog_error = nolog_error
        self.stdout_handlers: list[OutputHandler] = list(stdout_handlers or [])
        self.stderr_handlers: list[OutputHandler] = list(stderr_handlers or [])
        self.kill_grace = kill_grace
        Captured(max_output)  # checks it
        self.max_output = max_output
        self.name = name or cmd
        self._listeners: list[asyncio.Queue[tuple[Process, str, str] | None]] = []
        self._task: asyncio.Task[None] | None = None
        self.ended = False
        self.reset()

    def reset(self) -> Process:
        """Forget a finished run, to run again (execo's ``reset``).

        :raises RuntimeError: if the process is running.
        """
        if self._task is not None and not self.ended:
            raise RuntimeError(f"cannot reset {self!r}: it is running")
        self._task = None
        #: Each stream's kept tail and counts (``size``, ``lines`` and
        #: ``dropped`` bytes), by ``"stdout"`` and ``"stderr"``.
        self.captured = {STDOUT: Captured(self.max_output), STDERR: Captured(self.max_output)}
        self.exit_code: int | None = None
        self.error = False
        self.error_reason: str | None = None
        self.timeouted = False
        self.killed = False
        self.forced_kill = False
        self.started = False
        self.ended = False
        self.start_date: float | None = None
        self.end_date: float | None = None
        self._changed = asyncio.Event()
        self._expect_from = {STDOUT: 0, STDERR: 0}
        return self

    # -- state ---------------------------------------------------------

    @property
    def stdout(self) -> str:
        """What the command printed on its standard output (at most
        ``max_output`` bytes of it, the last ones), decoded as UTF-8."""
        return self.captured[STDOUT].text(self.ended)

    @property
    def stderr(self) -> str:
        """As :attr:`stdout`, for the standard error."""
        return self.captured[STDERR].text(self.ended)

    @property
    def host_name(self) -> str:
        """The host's address, a gateway's id, or ``localhost``."""
        if self.host is None:
            return "localhost"
        if isinstance(self.host, Host):
            return self.host.address
        return str(getattr(self.host, "id", self.host))

    @property
    def running(self) -> bool:
        """Started and not yet ended."""
        return self.started and not self.ended

    @property
    def ok(self) -> bool:
        """execo's ``ok``: not finished yet, or finished without a failure
        that is not ignored (a killed process's exit status does not count)."""
        if not self.started or not self.ended:
            return True
        return (
            (not self.error or self.ignore_error)
            and (not self.timeouted or self.ignore_timeout)
            # No exit status (it could not start, or the host was lost) is the
            # error's to judge, not the exit code's.
            and (self.exit_code in (0, None) or self.ignore_exit_code or self.killed)
        )

    @property
    def finished_ok(self) -> bool:
        """Ended, and :attr:`ok`."""
        return self.started and self.ended and self.ok

    def stats(self) -> dict[str, Any]:
        """execo's statistics for this one process (see :class:`Report`)."""
        from .report import empty_stats

        stats = empty_stats()
        stats.update(
            name=self.name,
            start_date=self.start_date,
            end_date=self.end_date,
            num_processes=1,
            num_started=int(self.started),
            num_ended=int(self.ended),
            num_errors=int(self.error),
            num_timeouts=int(self.timeouted),
            num_forced_kills=int(self.forced_kill),
            num_non_zero_exit_codes=int(self.ended and self.exit_code not in (0, None)),
            num_ok=int(self.ok),
            num_finished_ok=int(self.finished_ok),
        )
        return stats

    def __repr__(self) -> str:
        state = (
            "not started"
            if not self.started
            else "running"
            if not self.ended
            else f"exit_code={self.exit_code}"
        )
        flags = [flag for flag in ("error", "timeouted", "killed") if getattr(self, flag)]
        extra = f" {' '.join(flags)}" if flags else ""
        return f"<{self.kind} {self.host_name}: {self.cmd!r} {state}{extra}>"

    def dump(self) -> str:
        """Everything about the process, for logs and errors."""
        return (
            f"{self!r}\n  error_reason: {self.error_reason}\n"
            f"  stdout: {self.captured[STDOUT].tail(2000)!r}\n"
            f"  stderr: {self.captured[STDERR].tail(2000)!r}"
        )

    # -- life cycle ----------------------------------------------------

    def start(self) -> Process:
        """Start the process as a task on the running loop; return it.

        :raises RuntimeError: if it was started before and not reset.
        """
        if self._task is not None:
            raise RuntimeError(f"{self!r} was started already; reset() it to run it again")
        self.started = True
        self.start_date = time.time()
        self._task = asyncio.get_running_loop().create_task(self._main(), name=repr(self))
        return self

    async def wait(self, timeout: float | None = None) -> Process:
        """Wait for the end, at most ``timeout`` seconds (the process goes
        on after that). Cancelling the waiting task stops the process."""
        if self._task is None:
            raise RuntimeError(f"{self!r} was not started")
        task = self._task
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            if not task.done():
                self.killed = True
                task.cancel()
                await asyncio.wait([task])
            raise
        return self

    async def run(self, timeout: float | None = None) -> Process:
        """Start and wait (``timeout`` as in :meth:`wait`)."""
        self.start()
        return await self.wait(timeout)

    async def kill(self) -> Process:
        """Stop the process (and what it started) and wait for its end."""
        if self._task is not None and not self._task.done():
            self.killed = True
            self._task.cancel()
            await asyncio.wait([self._task])
        return self

    async def _main(self) -> None:
        try:
            await self._launch()
        except asyncio.CancelledError:
            _uncancel()
            self._end()
            return
        except Exception as exc:
            self.error = True
            self.error_reason = _describe(exc)
            self._end()
            return
        try:
            async with asyncio.timeout(self.timeout):
                self.exit_code = await self._exit_status()
        except TimeoutError:
            self.timeouted = self.killed = True  # as execo: a timeout kills
            await self._stop_quietly()
        except asyncio.CancelledError:
            _uncancel()
            self.killed = True
            await self._stop_quietly()
        except Exception as exc:
            self.error = True
            self.error_reason = _describe(exc)
            await self._stop_quietly()
        self._end()

    async def _stop_quietly(self) -> None:
        """Stop the work, to the end: being cancelled again meanwhile (a
        ``kill()`` during a timeout's stop) does not abandon the stop."""
        stop = asyncio.get_running_loop().create_task(self._stop())
        while not stop.done():
            try:
                await asyncio.shield(stop)
            except asyncio.CancelledError:
                _uncancel()
            except Exception as exc:  # the host is gone: nothing left to stop
                logger.debug("stopping %r: %s", self, _describe(exc))

    def _end(self) -> None:
        for stream in (STDOUT, STDERR):
            self._output(stream, b"", final=True)
        self._release()
        self.ended = True
        self.end_date = time.time()
        self._notify(None)
        self._log_end()

    def _log_end(self) -> None:
        failures = (
            (self.error and not self.nolog_error)
            or (self.timeouted and not self.nolog_timeout)
            or (
                self.exit_code not in (0, None)
                and not self.killed
                and not self.timeouted
                and not self.nolog_exit_code
            )
        )
        if failures:
            logger.warning("terminated: %s", self.dump())
        else:
            logger.debug("terminated: %r", self)

    # -- what subclasses provide ---------------------------------------

    async def _launch(self) -> None:
        """Start the work; an exception here is an error (not started)."""

    async def _exit_status(self) -> int | None:
        """Wait for the work's end; its exit status."""
        raise NotImplementedError

    async def _stop(self) -> None:
        """Stop the work and wait until it has ended."""

    def _release(self) -> None:
        """Give back what :meth:`_launch` took (connections, sessions)."""

    # -- output --------------------------------------------------------

    def _output(self, stream: str, data: bytes, final: bool = False) -> None:
        """Take ``data`` from ``stream``: keep it, then hand each complete
        line to the handlers and the line listeners. Linear in ``data``:
        lines are cut only when someone takes them."""
        captured = self.captured[stream]
        captured.add(data)
        handlers = self.stdout_handlers if stream == STDOUT else self.stderr_handlers
        lines = captured.cut(data, final, bool(handlers or self._listeners))
        if lines:
            # Handler by handler, each with all the lines of this chunk: a
            # file is opened once per chunk, not per line.
            for handler in handlers:
                _call_handler(handler, self, stream, lines)
            for queue in self._listeners:
                for line in lines:
                    queue.put_nowait((self, stream, line))
        if data or lines:
            self._changed.set()

    def _notify(self, item: tuple[Process, str, str] | None) -> None:
        for queue in self._listeners:
            queue.put_nowait(item)

    def listen(
        self, queue: asyncio.Queue[tuple[Process, str, str] | None] | None = None
    ) -> asyncio.Queue[tuple[Process, str, str] | None]:
        """A queue (``queue``, or a new one) that gets ``(process, stream,
        line)`` for each line from now on, and ``None`` at the end;
        :meth:`unlisten` it when done. Several processes may share a queue."""
        if queue is None:
            queue = asyncio.Queue()
        self._listeners.append(queue)
        if self.ended:
            queue.put_nowait(None)
        return queue

    def unlisten(self, queue: asyncio.Queue[tuple[Process, str, str] | None]) -> None:
        """Stop sending lines to ``queue`` (given by :meth:`listen`); no
        error if it gets none."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(queue)

    async def expect(
        self, regex: str | re.Pattern[str], timeout: float | None = None, stream: str = STDOUT
    ) -> re.Match[str] | None:
        """Wait until ``regex`` matches the output of ``stream`` past the
        previous match; the match, or ``None`` if the process ended or
        ``timeout`` passed first."""
        pattern = re.compile(regex) if isinstance(regex, str) else regex
        try:
            async with asyncio.timeout(timeout):
                while True:
                    captured = self.captured[stream]
                    # Positions count from the start of the whole output:
                    # the kept text may have lost its front meanwhile.
                    start = captured.text_start()
                    text = captured.text(self.ended)
                    match = pattern.search(text, max(0, self._expect_from[stream] - start))
                    if match is not None:
                        self._expect_from[stream] = start + match.end()
                        return match
                    if self.ended:
                        return None
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return None


def _uncancel() -> None:
    """The process task handles its cancellation itself (it stops the work
    and ends normally): let later timeouts in it work as if it had not been."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _call_handler(handler: OutputHandler, process: Process, stream: str, lines: list[str]) -> None:
    """Hand ``lines`` to ``handler``; a failure is logged, and a function
    that fails on one line still gets the next."""
    try:
        if isinstance(handler, str | os.PathLike):
            with Path(handler).open("a", encoding="utf-8") as file:
                file.write("\n".join(lines) + "\n")
            return
        if hasattr(handler, "write"):
            handler.write("\n".join(lines) + "\n")
            return
    except Exception:
        logger.exception("output handler %r failed on %r", handler, process)
        return
    for line in lines:
        try:
            handler(process, stream, line)
        except Exception:
            logger.exception("output handler %r failed on %r", handler, process)


# -- here -------------------------------------------------------------------


class LocalProcess(Process):
    """A shell command on this machine (``/bin/sh -c``), in a session of
    its own so that stopping it stops what it started."""

    kind = "LocalProcess"

    def __init__(self, cmd: str, **kwargs: Any) -> None:
        super().__init__(cmd, None, **kwargs)
        self._process: asyncio.subprocess.Process | None = None
        self._pumps: list[asyncio.Task[None]] = []

    async def _launch(self) -> None:
        self._process = await asyncio.create_subprocess_shell(
            self.cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        loop = asyncio.get_running_loop()
        self._pumps = [
            loop.create_task(self._pump(self._process.stdout, STDOUT)),
            loop.create_task(self._pump(self._process.stderr, STDERR)),
        ]

    async def _pump(self, reader: asyncio.StreamReader | None, stream: str) -> None:
        assert reader is not None
        while data := await reader.read(65536):
            self._output(stream, data)

    async def _exit_status(self) -> int | None:
        assert self._process is not None
        status = await self._process.wait()
        await asyncio.gather(*self._pumps)
        return status

    async def _stop(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        for sig, wait in ((signal.SIGTERM, self.kill_grace), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            if wait is None:
                self.forced_kill = True
                break
            try:
                async with asyncio.timeout(wait):
                    await process.wait()
                break
            except TimeoutError:
                continue
        self.exit_code = await process.wait()
        for pump in self._pumps:
            pump.cancel()

    def _release(self) -> None:
        for pump in self._pumps:
            pump.cancel()


# -- file copies -------------------------------------------------------------


class TransferProcess(Process):
    """One host's part of a :class:`Put` or :class:`Get`: ``work`` is
    awaited as the process; it ends with exit code 0, or an error."""

    kind = "TransferProcess"

    def __init__(
        self,
        cmd: str,
        host: Host | Gateway | None,
        work: Callable[[TransferProcess], Awaitable[None]],
        **kwargs: Any,
    ) -> None:
        super().__init__(cmd, host, **kwargs)
        self._work = work
        self.transferred = 0

    def reset(self) -> Process:
        self.transferred = 0
        return super().reset()

    async def _exit_status(self) -> int | None:
        await self._work(self)
        return 0
