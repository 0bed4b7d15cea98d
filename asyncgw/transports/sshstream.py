"""The stream of one ssh worker: an exec session, or a streamlocal channel
to a worker forked on the host (:mod:`.sshfork`), fed to the gateway's
sink. Shared by :mod:`.ssh` and :mod:`.sshfork`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import asyncssh

from ._base import StreamSink, Transport
from .sshpool import Slot, SSHTarget

__all__ = ["SSHTransport", "StreamSession"]


class StreamSession(asyncssh.SSHClientSession[bytes], asyncssh.SSHUNIXSession[bytes]):
    """An exec session's (or a streamlocal channel's) bytes, to the sink."""

    def __init__(self, sink: StreamSink) -> None:
        self.sink = sink
        self.closed = asyncio.get_running_loop().create_future()
        self.exit_status: int | None = None
        self.stderr_tail = b""

    def connection_made(
        self, chan: asyncssh.SSHClientChannel[bytes] | asyncssh.SSHUNIXChannel[bytes]
    ) -> None:
        pass  # the transport holds the channel

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
        self.ended("the ssh session ended")

    def ended(self, reason: str) -> None:
        self.sink.connection_lost(reason)
        if not self.closed.done():
            self.closed.set_result(None)


class SSHTransport(Transport):
    """One exec session on a (shared) SSH connection (or, as
    :class:`.sshfork.ForkedSSHTransport`, one streamlocal channel to a
    worker forked there)."""

    def __init__(
        self,
        target: SSHTarget,
        slot: Slot,
        channel: asyncssh.SSHClientChannel[bytes] | asyncssh.SSHUNIXChannel[bytes],
        session: StreamSession,
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
        status = self.exit_status()
        tail = self._session.stderr_tail.decode("utf-8", "replace").strip()
        text = (
            f"on {self._target}, exit status {status}"
            if status is not None
            else f"on {self._target}"
        )
        return f"{text}; stderr: {tail!r}" if tail else text

    def exit_status(self) -> int | None:
        if not isinstance(self._channel, asyncssh.SSHClientChannel):
            return None
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
