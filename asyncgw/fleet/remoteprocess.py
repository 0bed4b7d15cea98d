"""Processes on other hosts: a shell command over SSH (:class:`SshProcess`),
through a gateway's interpreter (:class:`GatewayProcess`), or relayed by
an intermediate gateway's ``ssh`` (:class:`RelayedSshProcess`, the tree).
See :mod:`.process` for what every process has, and for how stopping works.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import signal
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import asyncssh

from ..remote import command as _remote_command
from ..transports import sshpool
from .hosts import Host, resolve_params, ssh_target
from .process import _STOP_SLACK, STDERR, STDOUT, Process, _describe, logger

if TYPE_CHECKING:
    from .._channel import Channel
    from .._gateway import Gateway

__all__ = ["GatewayProcess", "RelayedSshProcess", "SshProcess", "ssh_options", "watched_command"]

# -- over SSH ---------------------------------------------------------------

#: What the login shell runs for a command over SSH, by default: the
#: shell's pid first (a line we strip from stdout), then the command. sshd
#: starts the login shell in a session, and so a process group, of its
#: own, whose id is that pid: stopping the command is a second session on
#: the same connection signalling that group (:data:`_KILLER`). sshd's own
#: signal requests are refused by many servers, and closing the channel
#: alone leaves the command running. The shell survives SIGTERM until its
#: foreground command has ended (a trap), so the command gets its grace.
#: It costs the shell's fork and wait for the command (see
#: :data:`_EXECED`). Needs a POSIX login shell (sh, bash, dash, zsh, ksh).
_HEADED = "echo $$; trap 'exit 143' TERM; eval {command} </dev/null"

#: A command that is one program and plain words (:func:`execable`) needs
#: no shell left around it: the shell prints its pid, then becomes the
#: program (``exec``), which so leads the process group that
#: :data:`_KILLER` signals, gets SIGTERM itself, and ends the session with
#: the same exit status as under :data:`_HEADED` (143 after SIGTERM, 137
#: after SIGKILL). This spares the remote shell a fork and a wait per
#: command: 0.25-0.4 ms of CPU, a tenth of what sshd spends on a short
#: command (``hostname`` on a 128-host farm).
_EXECED = "echo $$; exec {command} </dev/null"

#: Words with no shell syntax in them: no quotes, expansions, globs,
#: operators, redirections or comments (what the shell does to them under
#: ``exec`` is what it does under ``eval``: nothing).
_PLAIN_WORDS = re.compile(
    r"[ \t]*[A-Za-z0-9_./][A-Za-z0-9_./:@%+,-]*(?:[ \t]+[A-Za-z0-9_./:@%+,=-]+)*[ \t]*",
    re.ASCII,
)

#: Names a shell runs itself (keywords and builtins of sh, bash, dash,
#: zsh and ksh): ``exec`` would run a program of that name, or fail.
_SHELL_WORDS = """
. : [ [[ ! { } alias autoload bg bind bindkey break builtin bye caller case cd chdir
command compgen complete compopt continue coproc declare dirs disable disown do done
echo elif else emulate enable esac eval exec exit export false fc fg fi float for
foreach function functions getln getopts hash help history if in integer jobs kill
let limit local log logout mapfile noglob nocorrect popd print printf private pushd
pushln pwd r read readarray readonly rehash repeat return sched select set setopt
shift shopt source suspend test then time times trap true ttyctl type typeset
ulimit umask unalias unfunction unhash unlimit unset unsetopt until vared wait
whence where which while zcompile zformat zle zmodload zparseopts zstyle
"""
_SHELL_NAMES = frozenset(_SHELL_WORDS.split())


def execable(cmd: str) -> bool:
    """Whether ``cmd`` is one program and plain words, which the remote
    shell may ``exec`` (:data:`_EXECED`) rather than run as a child. A
    shell function of the same name defined by the login shell's start-up
    files would not be called: the program would."""
    return _PLAIN_WORDS.fullmatch(cmd) is not None and cmd.split()[0] not in _SHELL_NAMES


def headed_command(cmd: str) -> str:
    """The command line for ``cmd`` that prints the shell's pid first."""
    if execable(cmd):
        return _EXECED.format(command=cmd.strip())
    return _HEADED.format(command=shlex.quote(cmd))


#: Stops the group of a :data:`_HEADED` (or :data:`_EXECED`) command: SIGTERM, then SIGKILL
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
            watched_command(self.cmd, self.kill_grace) if watched else headed_command(self.cmd)
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
                if tag in ("o", "e"):
                    self._output(STDOUT if tag == "o" else STDERR, value)
                    # Values already received come without a pause: let the
                    # loop run between chunks, or a flood of output stalls it.
                    await asyncio.sleep(0)
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
