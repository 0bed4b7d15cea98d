"""via: a worker started by another gateway, its bytes routed through it.

``via=gw0//python=python3`` asks member ``gw0`` of the same group (the
proxy) to start an interpreter and to relay its stdin and stdout over a
channel; the new gateway's frames travel inside that channel's values. Any
depth works, since the proxy may itself be a via gateway: this is how one
connection to a head node fans out to many workers behind it.

Two channels per proxied worker: *data* carries byte chunks both ways
(``None`` from us means end of input; ``("exit", status)`` from the proxy
means the worker is gone), and *control* carries ``"kill"``, so that a kill
is never stuck behind data the worker does not read.

The proxy side is :data:`RELAY`, shipped as source like any remote code.
If the proxy dies, the worker's stdin closes and it exits; our side sees
the data channel end and reports the loss.
"""

from __future__ import annotations

import asyncio
import shlex
from collections import deque
from typing import TYPE_CHECKING, Any

from .._bootstrap import LOADER
from .._channel import Channel
from .._errors import ChannelError, GatewayError, SpecError
from ._base import OpenContext, StreamSink, Transport

if TYPE_CHECKING:
    from .._spec import XSpec

__all__ = ["ViaTransport", "open_via"]

#: Bytes queued for the proxy beyond which the router is asked to pause.
HIGH_WATER = 4 * 1024 * 1024
#: Seconds a kill waits for the proxy to confirm the worker is gone.
KILL_WAIT = 5.0


#: Runs on the proxy (shipped as source, stdlib only, Python >= 3.9). It
#: receives the control channel, the interpreter's argv (None: the proxy's
#: own) and the loader, then relays until the worker's output ends.
RELAY = """
import os, signal, subprocess, sys, threading, time

control, argv, loader = channel.receive()
proc = subprocess.Popen(
    (argv or [sys.executable]) + ["-c", loader],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, bufsize=0,
)
channel.send(proc.pid)

def kill():
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, signum)
        except OSError:
            return
        deadline = time.monotonic() + 0.2
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)

def obey_control():
    try:
        for command in control:
            if command == "kill":
                kill()
    except Exception:  # the control channel ended: nothing more to obey
        pass

def pump_output():
    fd = proc.stdout.fileno()
    while True:
        data = os.read(fd, 262144)
        if not data:
            break
        channel.send(data)
    channel.send(("exit", proc.wait()))

threading.Thread(target=obey_control, daemon=True).start()
output = threading.Thread(target=pump_output, daemon=True)
output.start()
try:
    for chunk in channel:
        if chunk is None:
            proc.stdin.close()
        else:
            proc.stdin.write(chunk)
except (OSError, ValueError):  # the worker stopped reading: it is exiting
    pass
finally:
    try:
        proc.stdin.close()  # our channel ended: so does the worker's input
    except OSError:
        pass
    output.join()
    if proc.poll() is None:
        kill()
"""


class ViaTransport(Transport):
    """The local end of a relayed worker: a data and a control channel."""

    def __init__(self, data: Channel, control: Channel, sink: StreamSink, proxy_id: str) -> None:
        self._data = data
        self._control = control
        self._sink = sink
        self._proxy_id = proxy_id
        self._loop = asyncio.get_running_loop()
        self._queue: deque[bytes | None] = deque()
        self._queued = 0
        self._paused = False
        self._pump: asyncio.Task[None] | None = None
        self._status: int | None = None
        self._ended = asyncio.Event()
        self._input_closed = False

    def start(self) -> None:
        self._data.setcallback(self._on_item, endmarker=_END)

    def _on_item(self, item: Any) -> None:
        if isinstance(item, bytes):
            self._sink.data_received(item)
        elif isinstance(item, tuple) and item[:1] == ("exit",):
            self._status = item[1]
            self._data.close()  # lets the relay return
        elif item is _END:
            self._ended.set()
            self._sink.connection_lost(f"the relay through gateway {self._proxy_id!r} ended")

    # -- writing

    def write(self, data: bytes) -> None:
        self._enqueue(data)

    def close_input(self) -> None:
        if not self._input_closed:
            self._input_closed = True
            self._enqueue(None)  # the relay closes the worker's stdin

    def _enqueue(self, item: bytes | None) -> None:
        """Send ``item`` now if nothing waits before it and the window has
        room; otherwise queue it for the drain task, in order."""
        if self._ended.is_set():
            return
        if not self._queue and self._send_now(item):
            return
        self._queue.append(item)
        self._queued += len(item or b"")
        if self._pump is None:
            self._pump = self._loop.create_task(self._drain())
        if self._queued > HIGH_WATER and not self._paused:
            self._paused = True
            self._sink.pause_writing()

    def _send_now(self, item: bytes | None) -> bool:
        try:
            return self._data.send_encoded_nowait(self._data.encode(item))
        except (ChannelError, GatewayError):
            return True  # the relay is gone; the channel's end reports it

    async def _drain(self) -> None:
        try:
            while self._queue:
                item = self._queue[0]
                try:
                    await self._data.send(item)
                except (ChannelError, GatewayError):
                    self._queue.clear()
                    break
                self._queue.popleft()
                self._queued -= len(item or b"")
        finally:
            self._pump = None
            if self._paused:
                self._paused = False
                self._sink.resume_writing()

    # -- lifetime

    def diagnosis(self) -> str:
        if self._status is None:
            return f"via {self._proxy_id!r}"
        return f"via {self._proxy_id!r}, exit status {self._status}"

    def exit_status(self) -> int | None:
        return self._status

    async def wait_closed(self) -> None:
        await self._ended.wait()

    async def kill(self) -> None:
        if self._ended.is_set():
            return
        try:
            await self._control.send("kill")
        except (ChannelError, GatewayError):
            return  # the proxy is gone, and with it the worker's stdin
        try:
            async with asyncio.timeout(KILL_WAIT):
                await self._ended.wait()
        except TimeoutError:
            self._data.close()


class _EndMarker:
    pass


_END = _EndMarker()


async def open_via(
    spec: XSpec, sink: StreamSink, bootstrap: bytes, context: OpenContext
) -> ViaTransport:
    """Have the gateway ``spec.via`` start the interpreter and relay it.

    :raises SpecError: if the group has no such gateway.
    :raises HostNotFound: if the proxy cannot start the interpreter.
    """
    from .._errors import HostNotFound, RemoteError

    group = context.group
    if group is None or spec.via not in group:
        raise SpecError(f"spec {str(spec)!r}: no gateway {spec.via!r} in the group to go via")
    assert spec.via is not None
    proxy = group[spec.via]
    # Default: the proxy's own interpreter.
    python = shlex.split(spec.python) if spec.python else None
    data = proxy.remote_exec(RELAY)
    control = proxy.newchannel()
    try:
        await data.send((control, python, LOADER))
        await data.receive()  # the worker's pid: it started
    except RemoteError as exc:
        raise HostNotFound(
            f"gateway {spec.via!r} could not start {python!r} for {str(spec)!r}: "
            f"{exc.formatted.strip().splitlines()[-1]}"
        ) from None
    transport = ViaTransport(data, control, sink, spec.via)
    transport.start()
    transport.write(bootstrap)
    return transport
