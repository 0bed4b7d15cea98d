"""Processes: one command (or copy) on one host, with execo's fields.

A :class:`Process` runs as a task on the event loop. Its subclasses say
how to start the work, wait for its exit status and stop it:

- :class:`SshProcess`: a shell command over SSH, on a connection of the
  shared pool (no Python needed on the far side);
- :class:`LocalProcess`: a shell command here;
- :class:`GatewayProcess`: a shell command through a gateway's
  interpreter (any transport: popen, via, docker, kubectl...);
- :class:`TransferProcess`: one host's part of a ``Put`` or ``Get``.

Failures are data, as in execo: a process that could not start has
``error`` and ``error_reason``; one that ran past ``timeout`` was stopped
and has ``timeouted``; a non-zero exit status is ``exit_code``. ``ok``
says whether all went well, counting what the ``ignore_*`` flags ignore;
the ``nolog_*`` flags silence the warning logged for each failure.

Stopping (a timeout, :meth:`Process.kill`, or cancelling the task that
awaits the process) stops the remote command and what it started: its
process group gets SIGTERM, then SIGKILL after ``kill_grace`` seconds.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
import re
import shlex
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import asyncssh

from ..remote import command as _remote_command
from ..transports import sshpool
from .hosts import Host, resolve_params, ssh_target

if TYPE_CHECKING:
    from .._channel import Channel
    from .._gateway import Gateway

__all__ = [
    "STDERR",
    "STDOUT",
    "GatewayProcess",
    "LocalProcess",
    "OutputHandler",
    "Process",
    "RelayedSshProcess",
    "SshProcess",
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
        self.stdout = ""
        self.stderr = ""
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
        self._decoders = {
            STDOUT: codecs.getincrementaldecoder("utf-8")("replace"),
            STDERR: codecs.getincrementaldecoder("utf-8")("replace"),
        }
        self._partial = {STDOUT: "", STDERR: ""}
        self._changed = asyncio.Event()
        self._expect_from = {STDOUT: 0, STDERR: 0}
        return self

    # -- state ---------------------------------------------------------

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
            f"  stdout: {self.stdout[-2000:]!r}\n  stderr: {self.stderr[-2000:]!r}"
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
        line to the handlers and the line listeners."""
        text = self._decoders[stream].decode(data, final)
        if not text and not (final and self._partial[stream]):
            return
        setattr(self, stream, getattr(self, stream) + text)
        pending = self._partial[stream] + text
        *lines, rest = pending.split("\n")
        if final and rest:
            lines.append(rest)
            rest = ""
        self._partial[stream] = rest
        handlers = self.stdout_handlers if stream == STDOUT else self.stderr_handlers
        for line in lines:
            for handler in handlers:
                _call_handler(handler, self, stream, line)
            self._notify((self, stream, line))
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
                    text = getattr(self, stream)
                    match = pattern.search(text, self._expect_from[stream])
                    if match is not None:
                        self._expect_from[stream] = match.end()
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


def _call_handler(handler: OutputHandler, process: Process, stream: str, line: str) -> None:
    try:
        if isinstance(handler, str | os.PathLike):
            with Path(handler).open("a", encoding="utf-8") as file:
                file.write(line + "\n")
        elif hasattr(handler, "write"):
            handler.write(line + "\n")
        else:
            handler(process, stream, line)
    except Exception:
        logger.exception("output handler %r failed on %r", handler, process)


# -- over SSH ---------------------------------------------------------------

#: What the login shell runs for a command over SSH, by default: the
#: shell's pid first (a line we strip from stdout), then the command. sshd
#: starts the login shell in a session, and so a process group, of its
#: own, whose id is that pid: stopping the command is a second session on
#: the same connection signalling that group (:data:`_KILLER`). sshd's own
#: signal requests are refused by many servers, and closing the channel
#: alone leaves the command running. The shell survives SIGTERM until its
#: foreground command has ended (a trap), so the command gets its grace.
#: It costs nothing measurable over the bare command. Needs a POSIX login
#: shell (sh, bash, dash, zsh, ksh).
_HEADED = "echo $$; trap 'exit 143' TERM; eval {command} </dev/null"

#: Stops the group of a :data:`_HEADED` command: SIGTERM, then SIGKILL
#: once the grace period is over, unless the group has gone by then.
_KILLER = (
    "kill -TERM -- -{pgid} 2>/dev/null; n={ticks}; "
    'while [ "$n" -gt 0 ] && kill -0 -- -{pgid} 2>/dev/null; do sleep 0.1; n=$((n - 1)); done; '
    "kill -KILL -- -{pgid} 2>/dev/null && echo forced; true"
)

#: The command with a watcher, which also stops it when the connection is
#: gone (``stop_on_disconnect``, and relayed commands, whose ``ssh`` is
#: stopped by closing its input). A watcher subshell reads the shell's
#: input, which we never write. When that input ends and the shell (or the
#: command it became, by exec) still runs, the watcher sends SIGTERM to the
#: group, then SIGKILL once the shell has ended or after the grace period;
#: if the shell has already ended, the command finished by itself, and
#: what it left in the background on purpose (``nohup``) lives on. It costs
#: a fork per command (about 0.5 ms of the remote CPU).
_WATCHED = (
    "exec 3<&0; {{ while read -r _; do :; done; kill -0 $$ 2>/dev/null || exit 0; "
    "trap '' TERM; kill -TERM 0; n={ticks}; "
    'while [ "$n" -gt 0 ] && kill -0 $$ 2>/dev/null; do sleep 0.1; n=$((n - 1)); done; '
    "kill -KILL 0; }} <&3 >/dev/null 2>&1 & exec 3<&-; trap 'exit 143' TERM; "
    "eval {command} </dev/null"
)


def _ticks(kill_grace: float) -> int:
    return max(1, round(kill_grace * 10))


def watched_command(cmd: str, kill_grace: float) -> str:
    """The command line for ``cmd`` that stops when its input ends."""
    return _WATCHED.format(ticks=_ticks(kill_grace), command=shlex.quote(cmd))


class _CommandSession(asyncssh.SSHClientSession[bytes]):
    def __init__(self, process: SshProcess, headed: bool) -> None:
        self.process = process
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.exit_status: int | None = None
        #: The remote shell's pid (its process group), once its header came.
        self.pgid: int | None = None
        self._header: bytes | None = b"" if headed else None

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self.process._output(STDERR, data)
            return
        if self._header is not None:  # the pid line comes first
            line, newline, data = (self._header + data).partition(b"\n")
            if not newline:
                self._header = line
                return
            self._header = None
            self.pgid = int(line) if line.strip().isdigit() else None
        if data:
            self.process._output(STDOUT, data)

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_status = 128 + getattr(_signals, f"SIG{signal}", 0)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


_signals = signal.Signals


class SshProcess(Process):
    """A shell command on ``host`` over SSH (asyncssh), on a connection
    shared with every other user of the same host and parameters."""

    kind = "SshProcess"

    def __init__(
        self,
        cmd: str,
        host: Host,
        connection_params: Mapping[str, Any] | None = None,
        *,
        keep: Callable[[sshpool.Slot], None] | None = None,
        **kwargs: Any,
    ) -> None:
        self.params = resolve_params(host, connection_params)
        kwargs.setdefault("kill_grace", float(self.params["kill_grace"]))
        super().__init__(cmd, host, **kwargs)
        self._keep = keep
        self._slot: sshpool.Slot | None = None
        self._channel: asyncssh.SSHClientChannel[bytes] | None = None
        self._session: _CommandSession | None = None

    async def _launch(self) -> None:
        assert isinstance(self.host, Host)
        target = ssh_target(self.host, self.params)
        slot = await sshpool.acquire(target, float(self.params["connect_timeout"]))
        self._slot = slot
        if self._keep is not None:
            self._keep(slot)
        watched = bool(self.params.get("stop_on_disconnect"))
        session = self._session = _CommandSession(self, headed=not watched)
        command = (
            watched_command(self.cmd, self.kill_grace)
            if watched
            else _HEADED.format(command=shlex.quote(self.cmd))
        )
        try:
            self._channel, _ = await slot.conn.create_session(
                lambda: session, command, encoding=None
            )
        except asyncssh.ChannelOpenError as exc:
            raise ConnectionError(f"{target} refused a session: {exc.reason}") from None

    async def _exit_status(self) -> int | None:
        assert self._session is not None
        await asyncio.shield(self._session.closed)
        if self._session.exit_status is None:
            raise ConnectionError(f"the connection to {self.host_name} was lost")
        return self._session.exit_status

    async def _stop(self) -> None:
        if self._channel is None or self._session is None:
            return
        if self._session.pgid is not None:
            await self._signal_group(self._session.pgid)
        elif not self._channel.is_closing():
            self._channel.write_eof()  # a watcher signals the command's group
        try:
            async with asyncio.timeout(self.kill_grace + _STOP_SLACK):
                await asyncio.shield(self._session.closed)
        except TimeoutError:
            self.forced_kill = True
            self._channel.close()
        if self._session.exit_status is not None:
            self.exit_code = self._session.exit_status

    async def _signal_group(self, pgid: int) -> None:
        """Signal the command's group from a second session (its own
        process group, so it survives what it sends)."""
        assert self._slot is not None
        killer = _KILLER.format(pgid=pgid, ticks=_ticks(self.kill_grace))
        slot = await sshpool.acquire(self._slot.target, float(self.params["connect_timeout"]))
        try:
            async with asyncio.timeout(self.kill_grace + _STOP_SLACK):
                result = await slot.conn.run(killer, check=False)
            if "forced" in str(result.stdout):
                self.forced_kill = True
        finally:
            slot.release()

    def _release(self) -> None:
        if self._channel is not None:
            self._channel.close()
        if self._slot is not None:
            self._slot.release()
            self._slot = None


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


# -- through a gateway -------------------------------------------------------


class GatewayProcess(Process):
    """A shell command run by a gateway's interpreter (see
    :mod:`asyncgw.remote.command`): for hosts reached by any transport."""

    kind = "GatewayProcess"

    def __init__(self, cmd: str, gateway: Gateway, **kwargs: Any) -> None:
        super().__init__(cmd, kwargs.pop("host", gateway), **kwargs)
        self.gateway = gateway
        self._channel: Channel | None = None
        self._exit: asyncio.Future[int] | None = None
        self._reader: asyncio.Task[None] | None = None

    def _command(self) -> tuple[str, dict[str, Any]]:
        """The shell command line the gateway runs, and its options."""
        return self.cmd, {"kill_grace": self.kill_grace}

    async def _launch(self) -> None:
        channel = self._channel = self.gateway.remote_exec(_remote_command)
        await channel.send(self._command())
        self._exit = asyncio.get_running_loop().create_future()
        self._reader = asyncio.get_running_loop().create_task(self._read(channel, self._exit))

    async def _read(self, channel: Channel, exit: asyncio.Future[int]) -> None:
        try:
            async for tag, value in channel:
                if tag == "o":
                    self._output(STDOUT, value)
                elif tag == "e":
                    self._output(STDERR, value)
                elif tag == "k":  # the far side had to SIGKILL
                    self.forced_kill = True
                elif tag == "x":
                    exit.set_result(value)
                    return
            raise ConnectionError(f"{self.host_name} ended the command without an exit status")
        except Exception as exc:
            if not exit.done():
                exit.set_exception(exc)

    async def _exit_status(self) -> int | None:
        assert self._exit is not None
        return await asyncio.shield(self._exit)

    async def _stop(self) -> None:
        if self._channel is None or self._exit is None or self._exit.done():
            return
        with contextlib.suppress(Exception):
            await self._channel.send("kill")
        try:
            async with asyncio.timeout(self.kill_grace + _STOP_SLACK):
                self.exit_code = await asyncio.shield(self._exit)
        except TimeoutError:
            self.forced_kill = True
        except Exception as exc:
            logger.debug("stopping %r: %s", self, _describe(exc))

    def _release(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._channel is not None:
            self._channel.close()


class RelayedSshProcess(GatewayProcess):
    """A shell command on ``host`` over SSH *from* an intermediate gateway
    (the fleet's tree): the gateway's host runs OpenSSH's ``ssh`` to the
    leaf, so the caller holds one connection per intermediate, not per
    leaf. Connection parameters become ``ssh`` options; the leaf's command
    is wrapped as for :class:`SshProcess`, and stops when ``ssh`` ends.
    ``ssh`` exiting with 255 (it could not connect) is an error."""

    kind = "RelayedSshProcess"

    def __init__(
        self,
        cmd: str,
        host: Host,
        gateway: Gateway,
        connection_params: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.params = resolve_params(host, connection_params)
        kwargs.setdefault("kill_grace", float(self.params["kill_grace"]))
        super().__init__(cmd, gateway, host=host, **kwargs)

    def _command(self) -> tuple[str, dict[str, Any]]:
        assert isinstance(self.host, Host)
        argv = ["ssh", *ssh_options(self.params), "--", self.host.address]
        argv.append(watched_command(self.cmd, self.kill_grace))
        return shlex.join(argv), {"kill_grace": self.kill_grace, "keep_stdin": True}

    async def _exit_status(self) -> int | None:
        status = await super()._exit_status()
        if status == 255:
            reason = self.stderr.strip().splitlines()[-1:] or ["ssh failed"]
            raise ConnectionError(f"via {self.gateway.id}: {reason[0]}")
        return status


def ssh_options(params: Mapping[str, Any]) -> list[str]:
    """OpenSSH client options for connection parameters."""
    options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(params['connect_timeout'])}"]
    for flag, key in (("-l", "user"), ("-p", "port"), ("-i", "keyfile"), ("-F", "config")):
        if params.get(key) is not None:
            options += [flag, str(params[key])]
    if params.get("jump") is not None:
        options += ["-J", str(params["jump"])]
    if params.get("keepalive") is not None:
        options += ["-o", f"ServerAliveInterval={params['keepalive']}"]
    if "known_hosts" in params:
        known = params["known_hosts"]
        options += (
            ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
            if known is None
            else ["-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes"]
        )
    return options


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
