"""The far side of log forwarding (:mod:`asyncgw.objects.logs`).

Shipped as source by ``gateway.remote_exec(this_module)``: stdlib only,
Python 3.9 syntax. The setup code receives its options, installs the
capture, sends back a channel of its own and ends; the sender thread it
started keeps that channel, so the forwarding outlives the setup code.

What is captured: records reaching the root logger (a handler there),
``warnings`` (``logging.captureWarnings``), uncaught exceptions of threads
(``threading.excepthook``) and lines written to ``sys.stdout`` (INFO) and
``sys.stderr`` (WARNING). The root logger's level is set to the caller's
threshold (otherwise its default, WARNING, would stop INFO records before
the handler); lines and thread exceptions below the threshold are not sent
but go where they went before (the original stream, the original hook).

Invariants: a producer (a logging call, a ``print``) only formats its
record and appends it to a bounded queue under a short lock; it never
sends, never waits for the sender and never logs. When the queue is full
the record is dropped and counted; the count travels with the next batch.
One sender thread sends batches in order, at most :data:`IN_FLIGHT`
batches ahead of the caller's acknowledgements, so a slow caller costs
drops here, never a clogged channel. The conversation, on the channel
sent back (caller ``L``, this side ``R``)::

    R: ([json_text, ...], dropped)  a batch: JSON lists of CHUNK records
                                    at most, in the order they came
    L: ("credit", n)                n more batches may be sent
    L: ("level", levelno)           a new threshold
    L: ("flush", token)             partial lines are queued, then a flush
                                    mark carrying ``token``: once the
                                    caller has handled it, it has handled
                                    every record made before it asked
    L: closes, or the gateway terminates: R sends what it holds, puts the
       streams, hooks and root level back, and closes.

JSON because its C codec costs both sides a fraction of what the wire's
pure-Python one does; chunks, so that neither side holds the GIL or the
event loop for long at a time. Under a flood the sender pauses
:data:`PAUSE` seconds after each full batch: with a CPU-bound remote
thread, every wake-up of another remote thread may cost the channels'
threads a GIL switch interval, so it wakes seldom.

A record is ``(levelno, levelname, name, message, created, threadName,
thread, pathname, lineno, funcName, exc_text, stack_info)``; ``name`` is
``"stdout"``/``"stderr"`` for lines, ``threading`` for thread exceptions.
A flush mark is a record whose ``levelno`` is :data:`FLUSH_MARK` and whose
message is the caller's token; it is queued even when the queue is full
(the caller waits for it), and only in answer to the caller.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections import deque

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: Records the queue holds before it drops.
CAPACITY = 10000
#: Records per batch at most, and characters of text per batch (roughly).
BATCH = 1000
BATCH_TEXT = 256 * 1024
#: Records per JSON text of a batch.
CHUNK = 100
#: Seconds the sender pauses after a full batch: under a flood it sends at
#: most BATCH records per PAUSE (20 000 a second).
PAUSE = 0.05
#: Batches sent ahead of the caller's acknowledgements.
IN_FLIGHT = 2
#: Characters of one message (or traceback) kept; the rest is cut.
MAX_TEXT = 64 * 1024
#: A partial line longer than this is sent as a line of its own.
MAX_LINE = 64 * 1024
#: The message of a stop: the channel's input ended.
#: Seconds a terminating worker waits for queued records to be sent.
DRAIN_WAIT = 2.0
_STOP = ("stop",)
#: The ``levelno`` of a flush mark (no logging level is negative).
FLUSH_MARK = -1


def clip(text: str) -> str:
    if len(text) <= MAX_TEXT:
        return text
    return text[:MAX_TEXT] + " [... %d characters cut]" % (len(text) - MAX_TEXT)


class Outbox:
    """The bounded queue between producers and the sender thread."""

    def __init__(self, capacity: int, threshold: int) -> None:
        self.capacity = capacity
        self.threshold = threshold
        self.lock = threading.Lock()
        self.ready = threading.Condition(self.lock)
        self.items: deque[tuple[Any, ...]] = deque()
        self.dropped = 0
        self.credit = IN_FLIGHT
        self.stopping = False
        self.sender_waits = False
        self.sending = False  # a batch is taken and not yet sent

    def full(self) -> bool:
        return len(self.items) >= self.capacity

    def put(self, record: tuple[Any, ...]) -> None:
        """Queue ``record``, or count it as dropped; never waits for the
        sender (only for the lock, held for a few operations at a time)."""
        with self.lock:
            if len(self.items) >= self.capacity:
                self.dropped += 1
                return
            self.items.append(record)
            if self.sender_waits and self.credit > 0:
                self.ready.notify()

    def put_mark(self, token: int) -> None:
        """Queue a flush mark: past the capacity, since the caller waits
        for it (one per caller's request, so the excess is bounded)."""
        mark = (FLUSH_MARK, "", "", str(token), 0.0, "", 0, "", 0, None, None, None)
        with self.lock:
            self.items.append(mark)
            self.ready.notify()

    def count_drop(self) -> None:
        with self.lock:
            self.dropped += 1

    def on_control(self, message: Any) -> None:
        """The caller's messages (run by the worker's reader thread: it
        must not block)."""
        with self.lock:
            if message is _STOP:
                self.stopping = True
            elif message[0] == "credit":
                self.credit += int(message[1])
            elif message[0] == "level":
                self.threshold = int(message[1])
                logging.getLogger().setLevel(self.threshold)
            self.ready.notify()

    def take(self) -> tuple[list[tuple[Any, ...]], int] | None:
        """The next batch and drop count; waits for records and credit.
        None: stopping, and nothing is left."""
        with self.lock:
            while not self.stopping and (self.credit <= 0 or not (self.items or self.dropped)):
                self.sender_waits = True
                self.ready.wait()
                self.sender_waits = False
            if self.stopping and not (self.items or self.dropped):
                return None
            batch: list[tuple[Any, ...]] = []
            size = 0
            items = self.items
            while items and len(batch) < BATCH and size < BATCH_TEXT:
                record = items.popleft()
                size += len(record[3]) + len(record[10] or "")
                batch.append(record)
            dropped, self.dropped = self.dropped, 0
            self.credit -= 1
            self.sending = True
            return batch, dropped

    def sent(self) -> None:
        with self.lock:
            self.sending = False
            self.ready.notify_all()

    def wait_drained(self, timeout: float) -> None:
        """Wait until every queued record is sent, at most ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.items or self.dropped or self.sending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.ready.wait(remaining)


def make_record(
    level: int, levelname: str, name: str, message: str, exc_text: Any = None
) -> tuple[Any, ...]:
    thread = threading.current_thread()
    return (
        level,
        levelname,
        name,
        clip(message),
        time.time(),
        thread.name,
        thread.ident,
        "",
        0,
        None,
        exc_text,
        None,
    )


class ForwardingHandler(logging.Handler):
    """A root handler turning records into tuples for the outbox."""

    def __init__(self, outbox: Outbox) -> None:
        logging.Handler.__init__(self, logging.NOTSET)
        self.outbox = outbox
        self._formatter = logging.Formatter()

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: the outbox has its own, and emit keeps no state.
        if self.filter(record):
            self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        outbox = self.outbox
        if record.levelno < outbox.threshold:
            return
        if outbox.full():  # before any formatting: a flood costs little
            outbox.count_drop()
            return
        try:
            message = record.getMessage()
            exc_text = record.exc_text
            if record.exc_info and not exc_text:
                exc_text = self._formatter.formatException(record.exc_info)
            outbox.put(
                (
                    record.levelno,
                    record.levelname,
                    record.name,
                    clip(message),
                    record.created,
                    record.threadName,
                    record.thread,
                    record.pathname,
                    record.lineno,
                    record.funcName,
                    clip(exc_text) if exc_text else None,
                    clip(record.stack_info) if record.stack_info else None,
                )
            )
        except Exception:
            self.handleError(record)


class LineWriter:
    """``sys.stdout``/``sys.stderr`` replaced: each complete line becomes a
    record. Partial lines are kept per thread (so that two threads'
    ``print`` calls do not mix) until a newline or ``flush``."""

    encoding = "utf-8"
    errors = "strict"
    newlines = None

    def __init__(self, outbox: Outbox, name: str, level: int, original: Any) -> None:
        self.outbox = outbox
        self.name = name
        self.level = level
        self.levelname = logging.getLevelName(level)
        self.original = original
        self._partial: dict[Any, str] = {}
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        if self.level < self.outbox.threshold:
            return int(self.original.write(text))  # not forwarded: as before
        if not text:
            return 0
        key = threading.get_ident()
        with self._lock:
            pending = self._partial.pop(key, "") + text
            lines = pending.split("\n")
            rest = lines.pop()
            if len(rest) > MAX_LINE:
                lines.append(rest)
                rest = ""
            if rest:
                self._partial[key] = rest
        for line in lines:
            self._put(line)
        return len(text)

    def _put(self, line: str) -> None:
        self.outbox.put(make_record(self.level, self.levelname, self.name, line))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            rest = self._partial.pop(threading.get_ident(), "")
        if rest:
            self._put(rest)
        if self.level < self.outbox.threshold:
            self.original.flush()

    def flush_all(self) -> None:
        with self._lock:
            rests, self._partial = list(self._partial.values()), {}
        for rest in rests:
            self._put(rest)

    def isatty(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def fileno(self) -> int:
        # What is written to the descriptor itself (subprocesses, C code)
        # is not forwarded: it goes where the stream went before.
        return int(self.original.fileno())

    @property
    def closed(self) -> bool:
        return False

    @property
    def buffer(self) -> BinaryLineWriter:
        return BinaryLineWriter(self)


class BinaryLineWriter:
    """``sys.stdout.buffer`` of a :class:`LineWriter` (UTF-8, lenient)."""

    def __init__(self, text: LineWriter) -> None:
        self._text = text

    def write(self, data: bytes) -> int:
        self._text.write(bytes(data).decode("utf-8", "replace"))
        return len(data)

    def flush(self) -> None:
        self._text.flush()


class Forwarder:
    """The installed capture and its sender thread."""

    def __init__(self, channel: Any, options: dict[str, Any]) -> None:
        self.channel = channel
        self.outbox = Outbox(int(options.get("capacity") or CAPACITY), int(options["level"]))
        self.handler = ForwardingHandler(self.outbox)
        self.saved: dict[str, Any] = {}

    def install(self) -> None:
        root = logging.getLogger()
        self.saved = {
            "level": root.level,
            "stdout": sys.stdout,
            "stderr": sys.stderr,
            "excepthook": threading.excepthook,
        }
        root.addHandler(self.handler)
        root.setLevel(self.outbox.threshold)
        logging.captureWarnings(True)
        threading.excepthook = self.thread_excepthook
        sys.stdout = LineWriter(self.outbox, "stdout", logging.INFO, sys.stdout)
        sys.stderr = LineWriter(self.outbox, "stderr", logging.WARNING, sys.stderr)

    def uninstall(self) -> None:
        saved = self.saved
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if isinstance(stream, LineWriter):
                stream.flush_all()
            if stream is not saved[name] and getattr(stream, "outbox", None) is self.outbox:
                setattr(sys, name, saved[name])
        if threading.excepthook == self.thread_excepthook:
            threading.excepthook = saved["excepthook"]
        logging.captureWarnings(False)
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(saved["level"])

    def on_control(self, message: Any) -> None:
        """The caller's messages, on the worker's reader thread. A flush
        request queues the partial lines first (outside the outbox's lock,
        which :meth:`LineWriter.flush_all` takes), then the mark."""
        if message is not _STOP and message[0] == "flush":
            for name in ("stdout", "stderr"):
                stream = getattr(sys, name)
                if getattr(stream, "outbox", None) is self.outbox:
                    stream.flush_all()
            self.outbox.put_mark(int(message[1]))
        else:
            self.outbox.on_control(message)

    def drain(self) -> None:
        """Send what is queued, partial lines too, before the worker exits
        when told to: records then reach the caller before its end does."""
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if isinstance(stream, LineWriter):
                stream.flush_all()
        self.outbox.wait_drained(DRAIN_WAIT)

    def thread_excepthook(self, args: Any) -> None:
        if args.exc_type is SystemExit:
            return  # as the default hook: a thread ending itself
        if self.outbox.threshold > logging.ERROR:
            self.saved["excepthook"](args)
            return
        import traceback

        text = "".join(
            traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
        )
        thread = args.thread
        name = thread.name if thread is not None else str(threading.get_ident())
        record = list(
            make_record(
                logging.ERROR,
                "ERROR",
                "threading",
                "Exception in thread %s" % name,
                clip(text.rstrip("\n")),
            )
        )
        if thread is not None:
            record[5], record[6] = thread.name, thread.ident
        self.outbox.put(tuple(record))

    def run(self) -> None:
        """The sender thread: batches until stopped; then put things back
        and send what is left (partial lines included)."""
        try:
            self.send_all()
        except Exception:
            pass  # the caller closed the channel (it raises again below)
        self.uninstall()
        try:
            self.send_all()
            self.channel.close()
        except Exception:
            pass  # nobody is left to tell

    def send_all(self) -> None:
        """Send batches until stopped and drained."""
        import json

        while True:
            taken = self.outbox.take()
            if taken is None:
                return
            batch, dropped = taken
            chunks = [
                json.dumps(batch[i : i + CHUNK], default=str) for i in range(0, len(batch), CHUNK)
            ]
            self.channel.send((chunks, dropped))
            self.outbox.sent()
            if len(batch) == BATCH and not self.outbox.stopping:  # a backlog: pace it
                time.sleep(PAUSE)


def start(channel: Any) -> None:
    options = channel.receive()
    logs = channel.gateway.newchannel()
    forwarder = Forwarder(logs, options)
    logs.setcallback(forwarder.on_control, endmarker=_STOP)
    forwarder.install()
    channel.gateway._worker.exit_hooks.append(forwarder.drain)
    thread = threading.Thread(target=forwarder.run, name="asyncgw-logforward", daemon=True)
    thread.start()
    channel.send((logs, {"host": socket.gethostname(), "pid": os.getpid()}))


if __name__ == "__channelexec__":
    start(channel)  # type: ignore[name-defined]  # noqa: F821
