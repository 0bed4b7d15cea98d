"""ssh: a worker on another host, over asyncssh (not the ``ssh`` binary).

``ssh=[user@]host[:port]`` runs ``python3 -c LOADER`` (or ``python=``) in an
exec session. Options, all spec keys:

====================================  =========================================
``ssh_config=PATH``                   an OpenSSH client config to read
                                      (default: ``~/.ssh/config`` if present)
``ssh_identity=PATH``                 a private key to offer
``ssh_known_hosts=PATH``              where host keys are checked (default:
                                      ``~/.ssh/known_hosts``); ``none`` turns
                                      checking off, visibly, in the spec
``ssh_jump=[user@]host[:port]``       connect through this host first
``ssh_keepalive=SECONDS``             keepalive interval (default 10); a host
                                      that stops answering is lost after 3
``connect_timeout=SECONDS``           for the connection and the greeting
====================================  =========================================

Gateways to the same host, user and options share one SSH connection, each
with a session of its own, up to ``sshpool.limits.max_sessions`` (10) sessions per
connection (OpenSSH's ``MaxSessions`` default); past it another connection
opens (:mod:`.sshpool`, which fleet commands share). A connection closes
when its last session ends. Nothing relies on
signals over SSH (sshd refuses them in common setups): killing closes the
session, and the worker exits when its input ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import sys
from typing import TYPE_CHECKING

import asyncssh

from .._bootstrap import python_argv
from ._base import OpenContext, StreamSink, Transport
from .sshpool import OPTION_KEYS, Slot, SSHTarget, acquire, parse_address

if TYPE_CHECKING:
    from .._spec import XSpec

__all__ = ["SSHTransport", "open_ssh"]

DEFAULT_CONNECT_TIMEOUT = 30.0


def _target(spec: XSpec) -> SSHTarget:
    assert spec.ssh is not None
    host, port, user = parse_address(spec.ssh, "ssh")
    options = tuple(
        (key, getattr(spec, key)) for key in OPTION_KEYS if getattr(spec, key) is not None
    )
    return SSHTarget(host, port, user, options)


class _Session(asyncssh.SSHClientSession[bytes]):
    def __init__(self, sink: StreamSink) -> None:
        self.sink = sink
        self.closed = asyncio.get_running_loop().create_future()
        self.exit_status: int | None = None
        self.stderr_tail = b""

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self.stderr_tail = (self.stderr_tail + data)[-2000:]
            if sys.stderr is not None:
                sys.stderr.write(data.decode("utf-8", "replace"))
        else:
            self.sink.data_received(data)

    def pause_writing(self) -> None:
        self.sink.pause_writing()

    def resume_writing(self) -> None:
        self.sink.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.sink.connection_lost("the ssh session ended")
        if not self.closed.done():
            self.closed.set_result(None)


class SSHTransport(Transport):
    """One exec session on a (shared) SSH connection."""

    def __init__(
        self,
        target: SSHTarget,
        slot: Slot,
        channel: asyncssh.SSHClientChannel[bytes],
        session: _Session,
    ) -> None:
        self._target = target
        self._slot = slot
        self._channel = channel
        self._session = session
        session.closed.add_done_callback(lambda _: slot.release())

    def write(self, data: bytes) -> None:
        if self._channel.is_closing():
            return  # the session's end is reported through connection_lost
        with contextlib.suppress(OSError):
            self._channel.write(data)

    def close_input(self) -> None:
        if not self._channel.is_closing():
            self._channel.write_eof()

    def diagnosis(self) -> str:
        status = self._channel.get_exit_status()
        tail = self._session.stderr_tail.decode("utf-8", "replace").strip()
        text = (
            f"on {self._target}, exit status {status}"
            if status is not None
            else f"on {self._target}"
        )
        return f"{text}; stderr: {tail!r}" if tail else text

    def exit_status(self) -> int | None:
        exit_signal = self._channel.get_exit_signal()
        if exit_signal is not None:  # a name such as "KILL"
            signum = getattr(signal, f"SIG{exit_signal[0]}", None)
            return -int(signum) if signum is not None else None
        return self._channel.get_exit_status()

    def stderr_tail(self) -> list[str]:
        text = self._session.stderr_tail.decode("utf-8", "replace")
        return text.splitlines()[-20:]

    async def wait_closed(self) -> None:
        await asyncio.shield(self._session.closed)

    async def kill(self) -> None:
        self._channel.close()
        await asyncio.shield(self._session.closed)


async def open_ssh(
    spec: XSpec, sink: StreamSink, bootstrap: bytes, context: OpenContext
) -> SSHTransport:
    """Open (or share) a connection to the spec's host and start a worker.

    :raises HostNotFound: if the host cannot be reached.
    :raises AuthenticationError: if it refused our credentials.
    :raises HostKeyError: if its host key could not be verified.
    """
    target = _target(spec)
    timeout = float(spec.connect_timeout or DEFAULT_CONNECT_TIMEOUT)
    slot = await acquire(target, timeout)
    python = shlex.split(spec.python) if spec.python else ["python3"]
    command = shlex.join(python_argv(python))
    session = _Session(sink)
    try:
        channel, _ = await slot.conn.create_session(lambda: session, command, encoding=None)
    except BaseException:
        slot.release()
        raise
    transport = SSHTransport(target, slot, channel, session)
    transport.write(bootstrap)
    return transport
