"""Remote logs arriving here: the local side of log forwarding.

With ``forward_logs`` (spec key or ``Group(forward_logs=True)``) a gateway
ships :mod:`asyncgw.remote.logforward` when it starts; from then on remote
``logging`` records, warnings, uncaught exceptions of remote threads and
lines written to ``sys.stdout``/``sys.stderr`` are handled by the local
logger ``asyncgw.remote.<gateway id>`` — records of the remote logger
``a.b`` by ``asyncgw.remote.<id>.a.b``, lines by ``….stdout`` (INFO) and
``….stderr`` (WARNING), thread exceptions by ``….threading``. See
``docs/forwarding.rst``.

Invariants: records of one gateway are handled in the order the remote
produced them, by one task. The tasks handle records in slices of at
most :data:`SLICE` seconds and, all gateways together, take at most about
:data:`SHARE` of the event loop's time: what they cannot keep up with is
dropped on the remote side, counted, and reported here by a WARNING
record on the gateway's logger (and in :attr:`LogForwarding.dropped`).
Channel traffic is never held up by it: the remote sends at most two
batches ahead of what this side has handled, and at most
``BATCH / PAUSE`` records a second (:mod:`asyncgw.remote.logforward`).

:func:`flush_logs` (:meth:`LogForwarding.flush`) returns once every
record the remote made before the call has been handled here, and those
records are handled in the caller's :mod:`contextvars` context, not the
task's: in Jupyter, where the cell an output belongs to is a context
variable, the records show under the cell that awaited the flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any

# From the core's modules, not the package root (which imports this layer).
from .._channel import Channel
from .._errors import ChannelClosed, ChannelError, GatewayError, GatewayLost
from .._gateway import Gateway
from ..remote import logforward as _remote

__all__ = [
    "LOGGER_PREFIX",
    "ClockOffset",
    "LogForwarding",
    "flush_logs",
    "log_forwarding",
    "measure_clock_offset",
    "start_log_forwarding",
]

#: The parent of every gateway's logger: ``asyncgw.remote.<gateway id>``.
LOGGER_PREFIX = "asyncgw.remote"
#: Seconds of record handling before the task lets the loop run others.
SLICE = 0.0005
#: The share of the loop's time the tasks of all gateways take at most.
SHARE = 0.1
#: Seconds of handling owed before a task pauses to pay them back.
DEBT = 0.001
#: Seconds between two reports of dropped records (the last one waits).
REPORT_INTERVAL = 1.0

log = logging.getLogger(__name__)

_FORWARDINGS: weakref.WeakKeyDictionary[Gateway, LogForwarding] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class ClockOffset:
    """A measure of the remote clock against the local one."""

    #: Remote ``time.time()`` minus local ``time.time()``, in seconds.
    offset: float
    #: The round trip of the sample it comes from, in seconds: the offset
    #: is within half of it of the truth (for a symmetric path).
    rtt: float


def _clock_server(channel: Any) -> None:
    """Remote: answer each value with the remote clock (shipped as source)."""
    import time

    for _ in channel:
        channel.send(time.time())


async def measure_clock_offset(gateway: Gateway, samples: int = 5) -> ClockOffset:
    """Ask the remote for its ``time.time()`` ``samples`` times and keep the
    sample with the shortest round trip: offset = remote − (t0 + t1) / 2.

    Cancelling abandons the measure (its remote code ends).

    :raises GatewayLost: if the gateway is gone.
    """
    channel = gateway.remote_exec(_clock_server)
    best: ClockOffset | None = None
    try:
        for _ in range(max(1, samples)):
            start = time.perf_counter()
            t0 = time.time()
            await channel.send(None)
            remote = await channel.receive()
            t1 = time.time()
            sample = ClockOffset(float(remote) - (t0 + t1) / 2, time.perf_counter() - start)
            if best is None or sample.rtt < best.rtt:
                best = sample
    finally:
        channel.close()
    assert best is not None
    return best


def log_forwarding(gateway: Gateway) -> LogForwarding | None:
    """The log forwarding of ``gateway``, if it forwards its logs."""
    return _FORWARDINGS.get(gateway)


async def flush_logs(gateway: Gateway) -> None:
    """Wait until every record that ``gateway``'s remote made before this
    call has been handled here (see :meth:`LogForwarding.flush`). Returns
    at once if the gateway does not forward its logs or forwarding has
    ended."""
    forwarding = log_forwarding(gateway)
    if forwarding is not None:
        await forwarding.flush()


async def start_log_forwarding(
    gateway: Gateway, level: int | str | None = None, capacity: int | None = None
) -> LogForwarding:
    """Start forwarding ``gateway``'s logs here (``open_gateway`` does it
    for gateways with ``forward_logs``): measure the clock offset, install
    the capture remotely and start the task that handles what arrives.

    :param level: the threshold below which the remote sends nothing
        (records and lines alike); by default the effective level of the
        gateway's logger now. :meth:`LogForwarding.set_level` changes it.
    :param capacity: records the remote queue holds before it drops.
    :raises RuntimeError: if the gateway forwards its logs already.
    :raises RemoteError: if the remote side could not be set up.
    :raises GatewayLost: if the gateway is gone.

    Cancelling leaves the remote side half set up: the caller kills the
    gateway (as ``open_gateway`` does on any failure).
    """
    if gateway in _FORWARDINGS:
        raise RuntimeError(f"gateway {gateway.id!r} forwards its logs already")
    name = f"{LOGGER_PREFIX}.{gateway.id}"
    threshold = _levelno(
        level if level is not None else logging.getLogger(name).getEffectiveLevel()
    )
    clock = await measure_clock_offset(gateway)
    setup = gateway.remote_exec(_remote)
    await setup.send({"level": threshold, "capacity": capacity or _remote.CAPACITY})
    channel, info = await setup.receive()
    await setup.waitclose()
    forwarding = LogForwarding(gateway, channel, info, clock, threshold)
    _FORWARDINGS[gateway] = forwarding
    return forwarding


class _Budget:
    """The loop time the forwarding tasks of one event loop may take: each
    second of handling makes them all owe ``(1 - SHARE) / SHARE`` seconds
    of pause, paid once more than :data:`DEBT` is owed (a leaky bucket)."""

    def __init__(self) -> None:
        self._free_at = 0.0  # when the loop owes nothing any more

    async def spend(self, seconds: float) -> None:
        now = time.monotonic()
        self._free_at = max(self._free_at, now) + seconds * (1 - SHARE) / SHARE
        if self._free_at - now > DEBT:
            await asyncio.sleep(self._free_at - now)


_BUDGETS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Budget] = (
    weakref.WeakKeyDictionary()
)


def _budget() -> _Budget:
    loop = asyncio.get_running_loop()
    budget = _BUDGETS.get(loop)
    if budget is None:
        budget = _BUDGETS[loop] = _Budget()
    return budget


def _levelno(level: int | str) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown logging level {level!r}")
    return number


class LogForwarding:
    """The forwarding of one gateway's logs: counters, the clock offset and
    the threshold. Made by :func:`start_log_forwarding`."""

    def __init__(
        self,
        gateway: Gateway,
        channel: Channel,
        info: dict[str, Any],
        clock: ClockOffset,
        threshold: int,
    ) -> None:
        self.gateway_id = gateway.id
        self._gateway = weakref.ref(gateway)
        # Dropped at the end, so that the gateway (which the channel names)
        # can go: this object is the value of a weak-keyed table.
        self._channel: Channel | None = channel
        #: The local logger that handles the remote root logger's records.
        self.logger_name = f"{LOGGER_PREFIX}.{gateway.id}"
        #: The remote host name and worker pid, as the remote reported them.
        self.host: str = str(info.get("host"))
        self.pid: int = int(info.get("pid") or 0)
        #: The clock offset used to correct remote times (see :attr:`offset`).
        self.clock = clock
        #: The remote threshold (a logging level).
        self.threshold = threshold
        #: Records handled here (those below a local logger's level count).
        self.received = 0
        #: Records the remote dropped because its queue was full.
        self.dropped = 0
        self._unreported = 0
        self._last_report = -REPORT_INTERVAL
        self._report_timer: asyncio.TimerHandle | None = None
        self._loggers: dict[str, logging.Logger] = {}
        # Pending flushes by token, oldest first: their futures and the
        # contexts their callers awaited in.
        self._flushes: dict[int, tuple[asyncio.Future[None], contextvars.Context]] = {}
        self._tokens = 0
        #: Set once forwarding has ended (the gateway went, or :meth:`close`).
        self.ended = asyncio.Event()
        self._task = asyncio.create_task(self._pump(), name=f"asyncgw logs of {gateway.id}")
        # An exit asked for returns once what the worker sent is handled.
        gateway.add_drain(self.ended.wait)

    def __repr__(self) -> str:
        return (
            f"<LogForwarding {self.gateway_id!r} received={self.received} "
            f"dropped={self.dropped} offset={self.offset:+.6f}s>"
        )

    @property
    def offset(self) -> float:
        """Remote clock minus local clock in seconds, as last measured:
        forwarded records' ``created`` is the remote time minus this."""
        return self.clock.offset

    def corrected(self, remote_time: float) -> float:
        """``remote_time`` (a remote ``time.time()``) on the local clock."""
        return remote_time - self.clock.offset

    async def measure_offset(self, samples: int = 5) -> ClockOffset:
        """Measure the clock offset again (clocks drift); later records are
        corrected by the new one. Cancelling keeps the old one.

        :raises GatewayLost: if the gateway is gone.
        """
        gateway = self._gateway()
        if gateway is None:
            raise GatewayLost(f"gateway {self.gateway_id!r} is gone", self.gateway_id)
        self.clock = await measure_clock_offset(gateway, samples)
        return self.clock

    async def set_level(self, level: int | str | None = None) -> None:
        """Change the remote threshold (and the remote root logger's level)
        to ``level``, by default to the gateway logger's effective level
        now (call it after changing the local logging levels).

        :raises ChannelError, GatewayError: if forwarding has ended.
        """
        if level is None:
            level = logging.getLogger(self.logger_name).getEffectiveLevel()
        threshold = _levelno(level)
        await self._live_channel().send(("level", threshold))
        self.threshold = threshold

    async def flush(self) -> None:
        """Return once every record the remote made before this call (log
        records, lines, partial lines too) has been handled here. Records
        handled while a flush waits are handled in the context of the
        oldest waiting caller: in Jupyter they print under its cell.
        Returns at once if forwarding has ended, and when it ends.

        Cancelling stops the waiting; the records are handled anyway.
        """
        channel = self._channel
        if channel is None:
            return
        self._tokens += 1
        token = self._tokens
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushes[token] = (done, contextvars.copy_context())
        try:
            try:
                await channel.send(("flush", token))
            except (ChannelError, GatewayError):
                return  # forwarding ended: nothing more will come
            await done
        finally:
            self._flushes.pop(token, None)

    def _flushed(self, token: int) -> None:
        entry = self._flushes.pop(token, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(None)

    def close(self) -> None:
        """Stop forwarding: the remote puts its streams, hooks and root
        level back. Records still on their way are lost. Idempotent."""
        if self._channel is not None:
            self._channel.close()

    def _live_channel(self) -> Channel:
        if self._channel is None:
            raise ChannelClosed(f"log forwarding of {self.gateway_id!r} has ended")
        return self._channel

    # -- the task

    async def _pump(self) -> None:
        channel = self._live_channel()
        try:
            async for chunks, dropped in channel:
                busy = await self._handle(chunks)
                if dropped:
                    self._count_dropped(dropped)
                # Once the worker has gone, what it sent before is still
                # queued here: handle it all, with no one left to credit.
                with contextlib.suppress(ChannelError, GatewayError):
                    await channel.send(("credit", 1))
                await _budget().spend(busy)
        except (ChannelError, GatewayError):
            pass  # the gateway went, or we closed the channel
        except Exception:
            log.exception("log forwarding of %s failed", self.gateway_id)
        finally:
            if self._report_timer is not None:
                self._report_timer.cancel()
            self._report()
            self._channel = None
            for token in list(self._flushes):
                self._flushed(token)
            self.ended.set()

    async def _handle(self, chunks: list[str]) -> float:
        """Handle a batch (JSON texts of records) in slices; return the
        time spent handling."""
        busy = 0.0
        start = time.perf_counter()
        for chunk in chunks:
            for record in json.loads(chunk):
                if record[0] == _remote.FLUSH_MARK:
                    self._flushed(int(record[3]))
                elif self._flushes:
                    next(iter(self._flushes.values()))[1].run(self._emit, record)
                else:
                    self._emit(record)
                now = time.perf_counter()
                if now - start > SLICE:
                    busy += now - start
                    await asyncio.sleep(0)
                    start = time.perf_counter()
        return busy + time.perf_counter() - start

    def _logger(self, remote_name: str) -> logging.Logger:
        logger = self._loggers.get(remote_name)
        if logger is None:
            name = (
                self.logger_name if remote_name == "root" else f"{self.logger_name}.{remote_name}"
            )
            logger = self._loggers[remote_name] = logging.getLogger(name)
        return logger

    def _emit(self, record: Any) -> None:
        (level, levelname, name, message, created, thread_name, thread, pathname, lineno, func,
         exc_text, stack_info) = record  # fmt: skip
        self.received += 1
        logger = self._logger(name)
        if not logger.isEnabledFor(level):
            return
        extra = {
            "host": self.host,
            "pid": self.pid,
            "remote_thread": thread_name,
            "remote_name": name,
            "remote_created": created,
            "gateway_id": self.gateway_id,
        }
        local = logger.makeRecord(
            logger.name, level, pathname, lineno, message, (), None, func, extra, stack_info
        )
        corrected = created - self.clock.offset
        local.relativeCreated += (corrected - local.created) * 1000
        local.created = corrected
        local.msecs = (corrected - int(corrected)) * 1000
        local.levelname = levelname
        local.threadName = thread_name
        local.thread = thread
        local.process = self.pid
        local.processName = self.gateway_id
        local.exc_text = exc_text
        logger.handle(local)

    # -- drops

    def _count_dropped(self, count: int) -> None:
        self.dropped += count
        self._unreported += count
        wait = self._last_report + REPORT_INTERVAL - time.monotonic()
        if wait <= 0:
            self._report()
        elif self._report_timer is None:
            self._report_timer = asyncio.get_running_loop().call_later(wait, self._report)

    def _report(self) -> None:
        """A WARNING on the gateway's logger for the drops not yet reported."""
        self._report_timer = None
        if not self._unreported:
            return
        count, self._unreported = self._unreported, 0
        self._last_report = time.monotonic()
        logging.getLogger(self.logger_name).warning(
            "%d log records dropped on %s (pid %d): its queue was full (%d dropped in all)",
            count,
            self.host,
            self.pid,
            self.dropped,
            extra={"host": self.host, "pid": self.pid, "dropped": count},
        )
