"""The remote worker: the main loop of a gateway's far side.

Shipped as source with ``_wire`` and the rest of ``remote`` (see
``_bootstrap``) to interpreters of Python >= 3.9; stdlib only, and it
imports asyncio only when async remote code runs, because importing
asyncio costs several interpreter starts.

Threads: one reader at a time (at first the main thread, or a helper
thread under the ``main_thread_only`` model) owns the input stream and
dispatches frames; each piece of sync remote code runs in a thread of its
own and writes its frames itself under a lock, so no hop stands between
remote code and the stream. Async remote code runs on one lazily started
event-loop thread. A service channel (``Channel._serve``) has its values
handled by the reader itself, inline, so a quick request costs no thread
switch; when one takes longer than :data:`TAKEOVER_AFTER`, a watchdog
hands the reading to another thread (see :class:`_ReadingDuty`).

Invariants: the protocol streams are private descriptors — fd 0 reads
/dev/null and fd 1 is stderr (/dev/null for execnet's code) — so
``print`` or ``input`` in remote code can never corrupt the stream. End
of input means the local side is gone: the worker exits at once, so no
orphan outlives its parent.
"""

from __future__ import annotations

import builtins
import gc
import mmap
import os
import sys
import threading
import weakref
from collections import deque

from .._wire import (
    ACK,
    CLOSE,
    CLOSE_ERROR,
    DATA,
    DEFAULT_MAX_PAYLOAD,
    EXEC,
    HEADER,
    HELLO,
    MAGIC,
    PROTOCOL_VERSION,
    REQUEST,
    TERMINATE,
    FrameDecoder,
    ProtocolError,
    decode_ack,
    dumps,
    loads,
)
from .alias import install_execnet_alias
from .channel import AsyncChannel, Channel, GatewayHandle, format_exception
from .execmodel import MAIN_THREAD_ONLY_DEADLOCK_TEXT
from .reading import ReadingDuty

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

__all__ = ["Worker", "main", "prepare", "rehearse", "serve"]

CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect
PYCF_ALLOW_TOP_LEVEL_AWAIT = 0x2000  # ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
#: Bytes read at once, into one buffer reused for every read: a fresh
#: buffer per read (``os.read``) is allocated with mmap and given back with
#: munmap at this size, or grows and trims the heap at smaller ones, which
#: cost 15 µs a read here, more than the rest of a small round trip's reading.
READ_SIZE = 256 * 1024
#: Seconds a remote_exec waits for the main thread before it is refused
#: with MAIN_THREAD_ONLY_DEADLOCK_TEXT (execnet's figure: long enough that
#: the previous code, which has closed its channel, has let go of it).
MAIN_THREAD_WAIT = 1.0
#: Seconds interrupted code has to end before a terminating worker leaves.
INTERRUPT_WAIT = 2.0
#: Seconds the reader may spend on one piece of inline work (a served
#: request) before another thread takes over the reading: well above a
#: quick call, which then pays for no thread switch, and short enough that
#: a slow one holds up the other channels only briefly.
TAKEOVER_AFTER = 0.002
#: Watchdog polls without inline work after which it sleeps until the next.
WATCH_QUIET_POLLS = 50
#: The worker's least first-generation threshold of the garbage collector
#: (the interpreter's default is 700). Every channel in flight keeps some 30
#: tracked objects alive (its task, coroutines, futures, locks); at the
#: default a full collection comes every 70 000 net allocations and rescans
#: all of them, so with many channels at once the collector's cost grew with
#: the square of their number (measured with benchmarks/profile_worker_gc.py:
#: 20 000 async channels, 2.84 s of worker CPU, 1.3 s of it collecting). Ten
#: times fewer passes leave at most a few thousand more objects waiting for
#: one; remote code that wants otherwise calls gc.set_threshold itself.
GC_THRESHOLD0 = 7000
#: Times a fork server runs a worker's start (:func:`rehearse`) before its
#: first fork. A forked child shares the fork server's pages until it
#: writes one, which copies it (some 4 µs here); running code the parent
#: never ran writes many: the interpreter's type-attribute cache, the
#: code's warm-up counters and specializations. Run often enough here
#: (3.11 specializes a function after 8 calls), they are shared as they are.
REHEARSALS = 20


class _ThreadPool:
    """Threads for sync remote code, reused: starting a thread costs more
    than a round trip. Grows to the peak number of concurrent executions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[list[Any]] = []  # [wakeup lock, job] per idle thread

    def run(self, function: Callable[..., None], args: tuple[Any, ...]) -> None:
        with self._lock:
            if self._idle:
                slot = self._idle.pop()
                slot[1] = (function, args)
                slot[0].release()  # wake that thread
                return
        slot = [threading.Lock(), (function, args)]
        slot[0].acquire()
        thread = threading.Thread(target=self._serve, args=(slot,), name="asyncgw-exec")
        thread.daemon = True
        thread.start()

    def _serve(self, slot: list[Any]) -> None:
        while True:
            function, args = slot[1]
            slot[1] = None
            function(*args)
            with self._lock:
                self._idle.append(slot)
            slot[0].acquire()  # until run() hands this thread a job


class Worker:
    """Owns the streams, the channel table and the execution of remote code."""

    def __init__(self, rfd: int, wfd: int, config: dict[str, Any]) -> None:
        self._make()
        self.configure(rfd, wfd, config)

    @classmethod
    def blank(cls) -> Worker:
        """A worker without streams or config yet (:meth:`configure` gives
        them): a fork server makes one before its forks, and each forked
        child configures its own copy of it (see :func:`rehearse`)."""
        worker = cls.__new__(cls)
        worker._make()
        return worker

    def _make(self) -> None:
        """The state every worker starts with, whatever its config."""
        self._write_lock = threading.RLock()  # a collected channel's close may nest
        self._lock = threading.Lock()  # guards the fields below
        # Channels live as long as something references them: remote code,
        # a queue they wait in, running code; those with a callback are held.
        self._channels: weakref.WeakValueDictionary[int, Channel] = weakref.WeakValueDictionary()
        self._held: dict[int, Channel] = {}
        self._async_runs: set[Any] = set()  # futures of running async code
        self._writer = 0  # the thread inside write_frame
        self._dropped: list[int] = []  # closes of channels collected meanwhile
        self._next_id = 2  # the remote side numbers its channels even
        self._executing = 0
        self._closing = 0  # finished code whose close is being sent
        self._terminating = False
        self._idle = threading.Condition(self._lock)
        self._loop: Any = None
        self._main_jobs: deque[tuple[Channel, tuple[Any, ...]]] = deque()
        self._main_busy = False
        self._threads = _ThreadPool()
        self._compiled: dict[tuple[str, str], Any] = {}
        self._main_wake = threading.Condition(threading.Lock())
        #: Called, in order, before the worker exits when told to (not when
        #: the caller is gone): what a service must send before the end.
        self.exit_hooks: list[Callable[[], None]] = []
        # Read, not yet dispatched; a large DATA payload is a view lent by
        # the decoder, valid until the next read (everything read is
        # dispatched, hence decoded, before that).
        self._frames: deque[tuple[int, int, bytes | memoryview]] = deque()
        self.reading = ReadingDuty(self._read_on_duty, TAKEOVER_AFTER, WATCH_QUIET_POLLS)

    def configure(self, rfd: int, wfd: int, config: dict[str, Any]) -> None:
        """Give the worker its streams and config (once, before it serves)."""
        self.rfd = rfd
        self.wfd = wfd
        self.gateway_id = config.get("id")
        self.window = int(config.get("window", 8 * 1024 * 1024))
        self.execmodel = config.get("execmodel") or "thread"
        self.max_frame = int(config.get("max_frame") or DEFAULT_MAX_PAYLOAD)
        self.handle = GatewayHandle(self)
        self._decoder = FrameDecoder(self.max_frame)
        # Anonymous memory: a page is resident once a read reaches it.
        # Mapped here, in the worker's own process, never in a fork server:
        # mmap(-1) is MAP_SHARED, which a fork would share with the parent.
        self._read_buffer = memoryview(mmap.mmap(-1, READ_SIZE))

    # -- output

    def write_frame(self, msgtype: int, ident: int, payload: bytes = b"") -> None:
        header = HEADER.pack(msgtype, ident, len(payload))
        with self._write_lock:
            self._writer = threading.get_ident()
            try:
                if len(payload) < 65536:
                    self._write_all(header + payload)
                else:  # spare a copy of big payloads
                    self._write_all(header)
                    self._write_all(payload)
                while self._dropped:  # collected while we wrote: close them now
                    self._write_all(HEADER.pack(CLOSE, self._dropped.pop(), 0))
            except OSError:
                # The local side is gone; nobody is left to tell.
                _exit(0)
            finally:
                self._writer = 0

    def write_parts(
        self, msgtype: int, ident: int, parts: list[bytes | memoryview], size: int
    ) -> None:
        """Write a frame whose payload is ``parts`` (``size`` bytes in all),
        with one ``writev``: a large body is not copied into one payload."""
        if len(parts) == 1:
            self.write_frame(msgtype, ident, parts[0])  # type: ignore[arg-type]
            return
        buffers = [HEADER.pack(msgtype, ident, size), *parts]
        with self._write_lock:
            self._writer = threading.get_ident()
            try:
                while buffers:
                    written = os.writev(self.wfd, buffers)
                    while written:
                        head = buffers[0]
                        if written < len(head):
                            buffers[0] = memoryview(head)[written:]
                            break
                        written -= len(head)
                        del buffers[0]
                while self._dropped:  # collected while we wrote: close them now
                    self._write_all(HEADER.pack(CLOSE, self._dropped.pop(), 0))
            except OSError:
                _exit(0)  # the local side is gone; nobody is left to tell
            finally:
                self._writer = 0

    def close_dropped(self, ident: int) -> None:
        """Send the close of a channel that was garbage-collected (from its
        ``__del__``, which may run in any thread at any point: inside our own
        write_frame it only queues, so frames never interleave)."""
        if self._writer == threading.get_ident():
            self._dropped.append(ident)
        else:
            self.write_frame(CLOSE, ident)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.wfd, view) :]

    # -- channel table

    def channel_for_value(self, ident: int) -> Channel:
        """The channel a received value names. One of our own (even) ids that
        is no longer in the table was closed and forgotten: it stays closed."""
        with self._lock:
            channel = self._channels.get(ident)
            if channel is not None:
                return channel
            channel = Channel(self, ident)
            if ident & 1:
                self._channels[ident] = channel
                return channel
        channel._closed = channel._remote_closed = channel._input_ended = True
        return channel

    def channel_for_id(self, ident: int) -> Channel:
        with self._lock:
            channel = self._channels.get(ident)
            if channel is None:
                channel = self._channels[ident] = Channel(self, ident)
            return channel

    def new_channel(self) -> Channel:
        with self._lock:
            ident = self._next_id
            self._next_id += 2
        return self.channel_for_id(ident)

    def id_of_channel(self, obj: object) -> int | None:
        if isinstance(obj, Channel):
            return obj.id
        if isinstance(obj, AsyncChannel):
            return obj.id
        return None

    def hold(self, channel: Channel) -> None:
        with self._lock:
            self._held[channel.id] = channel

    def forget_if_done(self, channel: Channel) -> None:
        if channel._closed and channel._remote_closed:
            with self._lock:
                if self._channels.get(channel.id) is channel:
                    del self._channels[channel.id]
                if self._held.get(channel.id) is channel:
                    del self._held[channel.id]

    # -- input

    def read_loop(self) -> None:
        """Read and dispatch frames for as long as the worker lives (this
        thread, or whichever takes the reading duty over from it)."""
        self.reading.serve()

    def _read_on_duty(self, generation: int, ready: Callable[[], bool] | None) -> None:
        """Read and dispatch while ``generation`` holds the duty, and, for a
        thread reading for its own ``receive``, until ``ready()`` once what
        was read is dispatched."""
        frames = self._frames
        reading = self.reading
        dispatch = self._dispatch
        while reading.generation == generation:
            if frames:
                dispatch(*frames.popleft())
                continue
            # What was read is all dispatched (values queued for receive).
            if ready is not None and ready():
                return
            buffer = self._read_buffer
            decoder = self._decoder
            # A large payload under way is read straight into its own buffer.
            size = os.readv(self.rfd, decoder.buffers(buffer))
            if not size:
                _exit(0)  # the local side is gone: leave no orphan behind
            try:
                # The decoder copies out what it keeps: the buffer is free again.
                frames.extend(decoder.filled(size, buffer))
            except ProtocolError as exc:
                sys.stderr.write("asyncgw worker: %s; exiting\n" % exc)
                _exit(3)

    def _dispatch(self, msgtype: int, ident: int, payload: bytes | memoryview) -> None:
        if msgtype == DATA:
            channel = self._channels.get(ident)
            if channel is None:
                if not ident & 1:  # one of ours, closed and forgotten: drop
                    return
                channel = self.channel_for_id(ident)
            channel._deliver(payload)
        elif msgtype == ACK:
            channel = self._channels.get(ident)
            if channel is not None:
                channel._on_ack(decode_ack(payload))
        elif msgtype in (CLOSE, CLOSE_ERROR):
            channel = self._channels.get(ident)
            if channel is not None:
                error = str(payload, "utf-8", "replace") if msgtype == CLOSE_ERROR else None
                channel._on_remote_close(error)
            elif ident & 1:  # the peer's channel, never used here: just answer
                self.write_frame(CLOSE, ident)
        elif msgtype == EXEC:
            self._start_exec(ident, payload)
        elif msgtype == REQUEST:
            self._answer(ident, str(payload, "ascii", "replace"))
        elif msgtype == TERMINATE:
            self._terminate(float(payload) if payload else None)

    def _answer(self, ident: int, what: str) -> None:
        if what == "status":
            with self._lock:
                answer: Any = {
                    "numchannels": len(self._channels),
                    "numexecuting": self._executing,
                    "execmodel": self.execmodel,
                }
        elif what == "info":
            answer = {
                "executable": sys.executable,
                "version_info": tuple(sys.version_info),
                "platform": sys.platform,
                "cwd": os.getcwd(),
                "pid": os.getpid(),
            }
        else:
            self.write_frame(CLOSE_ERROR, ident, ("unknown request %r" % what).encode())
            return
        self.write_frame(DATA, ident, dumps(answer))
        self.write_frame(CLOSE, ident)

    # -- execution

    def _start_exec(self, ident: int, payload: bytes | memoryview) -> None:
        channel = self.channel_for_id(ident)
        source = filename = None
        try:
            request = loads(payload)
            source, funcname, kwargs, is_async = request[:4]
            code, filename = self._compile(source, request[4] if len(request) > 4 else None)
        except BaseException:
            channel._send_close(format_exception(filename, source))
            return
        if not funcname:
            is_async = bool(code.co_flags & CO_COROUTINE)
        with self._lock:
            if self._terminating:
                refused = True
            else:
                refused = False
                self._executing += 1
        if refused:
            channel._send_close("the gateway is terminating and accepts no new code")
            return
        # Held until closed both ways: async code waiting on it is otherwise
        # reachable only through the channel itself (a cycle the collector
        # would take, closing the channel under the running code).
        self.hold(channel)
        if is_async:
            self._run_async(channel, code, source, funcname, kwargs)
        elif self.execmodel == "main_thread_only":
            self._schedule_on_main(channel, (channel, code, source, funcname, kwargs))
        else:
            self._threads.run(self._run_sync, (channel, code, source, funcname, kwargs))

    def _compile(self, source: str, filename: str | None = None) -> tuple[Any, str]:
        """Compile remote code, reusing the result for source seen before
        (``call`` sends the same source every time). ``filename``: the
        module's own, for tracebacks (its lines come from ``source``)."""
        filename = filename or "<remote exec %08x>" % (hash(source) & 0xFFFFFFFF)
        code = self._compiled.get((source, filename))
        if code is None:
            code = compile(source, filename, "exec", PYCF_ALLOW_TOP_LEVEL_AWAIT)
            if len(self._compiled) >= 64:
                self._compiled.clear()
            self._compiled[(source, filename)] = code
        return code, filename

    def _namespace(self, channel: object) -> dict[str, Any]:
        return {"channel": channel, "__name__": "__channelexec__", "__builtins__": builtins}

    def _run_sync(
        self, channel: Channel, code: Any, source: str, funcname: str | None, kwargs: Any
    ) -> None:
        error = None
        channel._executing = True
        try:
            namespace = self._namespace(channel)
            exec(code, namespace)
            if funcname:
                namespace[funcname](channel, **(kwargs or {}))
        except EOFError:
            pass  # as in execnet: code that ran out of input ended normally
        except BaseException:
            error = format_exception(code.co_filename, source)
        self._finish(channel, error)

    def _finish(self, channel: Channel, error: str | None) -> None:
        self.reading.step_aside()  # this thread's code is done: it reads no more
        channel._executing = False
        # No longer executing before the close goes out (whoever saw the
        # close and asks for the status finds it counted), but not idle
        # until it has gone: the worker must not exit with it unsent.
        with self._lock:
            self._executing -= 1
            self._closing += 1
        try:
            channel._send_close(error, override=True)
        finally:
            with self._lock:
                self._closing -= 1
                self._idle.notify_all()

    def _is_idle(self) -> bool:
        return not self._executing and not self._closing

    def _event_loop(self) -> Any:
        if self._loop is None:
            import asyncio  # only now: it is expensive to import

            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="asyncgw-loop", daemon=True)
            thread.start()
            self._loop = loop
        return self._loop

    def _run_async(
        self, channel: Channel, code: Any, source: str, funcname: str | None, kwargs: Any
    ) -> None:
        loop = self._event_loop()
        # A task started by the loop itself, not run_coroutine_threadsafe:
        # that chains a concurrent Future (a Condition, its lists, closures
        # in cells) to every task, some 30 objects the collector tracks per
        # running piece of code; with thousands of channels waiting, every
        # full collection rescans them all (see benchmarks/profile_worker_gc.py).
        loop.call_soon_threadsafe(self._start_task, loop, channel, code, source, funcname, kwargs)

    def _start_task(
        self,
        loop: Any,
        channel: Channel,
        code: Any,
        source: str,
        funcname: str | None,
        kwargs: Any,
    ) -> None:
        task = loop.create_task(self._run_coroutine(channel, loop, code, source, funcname, kwargs))
        # Tasks are referenced weakly by their loop: hold each until done.
        self._async_runs.add(task)
        task.add_done_callback(self._async_runs.discard)

    async def _run_coroutine(
        self,
        channel: Channel,
        loop: Any,
        code: Any,
        source: str,
        funcname: str | None,
        kwargs: Any,
    ) -> None:
        error = None
        channel._executing = True
        try:
            achannel = AsyncChannel(channel, loop)
            namespace = self._namespace(achannel)
            if funcname:
                exec(code, namespace)
                await namespace[funcname](achannel, **(kwargs or {}))
            else:
                awaitable = eval(code, namespace)
                if awaitable is not None:
                    await awaitable
        except BaseException:
            error = format_exception(code.co_filename, source)
        self._finish(channel, error)

    def _schedule_on_main(self, channel: Channel, args: tuple[Any, ...]) -> None:
        """Queue sync code for the main thread (``main_thread_only``). Code
        runs there one piece at a time; one that still finds the main thread
        busy after :data:`MAIN_THREAD_WAIT` seconds is refused with execnet's
        deadlock error, since the code before it may be waiting for it. The
        reader never waits here: a timer thread does, and only when busy."""
        job = (channel, args)
        with self._main_wake:
            self._main_jobs.append(job)
            self._main_wake.notify()
            busy = self._main_busy or len(self._main_jobs) > 1
        if busy:
            timer = threading.Timer(MAIN_THREAD_WAIT, self._refuse_if_waiting, (job,))
            timer.daemon = True
            timer.start()

    def _refuse_if_waiting(self, job: tuple[Channel, tuple[Any, ...]]) -> None:
        with self._main_wake:
            try:
                self._main_jobs.remove(job)
            except ValueError:
                return  # it got the main thread in time
        self._finish(job[0], MAIN_THREAD_ONLY_DEADLOCK_TEXT)

    def run_main_jobs(self) -> None:
        """The main thread's loop under the ``main_thread_only`` model."""
        while True:
            with self._main_wake:
                self._main_busy = False
                while not self._main_jobs:
                    self._main_wake.wait()
                _, args = self._main_jobs.popleft()
                self._main_busy = True
            self._run_sync(*args)

    # -- termination

    def _terminate(self, grace: float | None) -> None:
        """Refuse new code, end every channel's input, exit once code is done
        (or, with ``grace``, once that many seconds have passed)."""
        with self._lock:
            self._terminating = True
            channels = list(self._channels.values())
        for channel in channels:
            channel._end_input(None)
        thread = threading.Thread(
            target=self._exit_when_idle, args=(grace,), name="asyncgw-exit", daemon=True
        )
        thread.start()

    def _exit_when_idle(self, grace: float | None) -> None:
        with self._lock:
            idle = self._idle.wait_for(self._is_idle, grace)
        if not idle:
            # As execnet: interrupt the main thread's code, then leave anyway.
            import _thread

            _thread.interrupt_main()
            with self._lock:
                self._idle.wait_for(self._is_idle, INTERRUPT_WAIT)
        for hook in self.exit_hooks:
            try:
                hook()
            except Exception:  # leaving anyway
                pass
        _exit(0 if idle else 1)


def _exit(status: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # exiting anyway
            pass
    os._exit(status)


def _apply_config(config: dict[str, Any]) -> None:
    if config.get("dont_write_bytecode"):
        sys.dont_write_bytecode = True
    for name, value in (config.get("env") or {}).items():
        os.environ[name] = value
    chdir = config.get("chdir")
    if chdir:
        chdir = os.path.expanduser(chdir)
        os.makedirs(chdir, exist_ok=True)
        os.chdir(chdir)
    nice = config.get("nice")
    if nice:
        os.nice(int(nice))


def _tune_gc() -> None:
    """The bootstrap's objects (modules, classes, functions) live as long as
    the worker: move them out of the collector's sight, so that no full
    collection scans them again, and make collections rarer (see
    :data:`GC_THRESHOLD0`)."""
    gc.freeze()  # no collect first: it would cost milliseconds of every start
    threshold0, threshold1, threshold2 = gc.get_threshold()
    if 0 < threshold0 < GC_THRESHOLD0:  # 0: disabled by the environment
        gc.set_threshold(GC_THRESHOLD0, threshold1, threshold2)


def prepare() -> None:
    """What every worker does first, the same in all: a fork server does it
    once, for all the workers it forks (they start at :func:`serve`)."""
    _tune_gc()
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    except AttributeError:  # replaced by something without reconfigure
        pass


def rehearse(times: int = REHEARSALS) -> None:
    """Run what :func:`serve` runs up to its HELLO, ``times`` over, on
    /dev/null (for a fork server, before its first fork; see
    :data:`REHEARSALS`); then make what a forked worker finds ready: the
    blank :class:`Worker` it configures and the HELLO made but for the pid."""
    global _spare, _hello_parts
    # The first code every forked child runs is threading's after-fork hook
    # (os.register_at_fork): run here too, its lookups and warm-up are made
    # in the pages the children share (~40 fewer copied in each). Only while
    # this is the one thread threading knows of: the hook takes any other
    # for one that did not survive a fork.
    after_fork = getattr(threading, "_after_fork", None)
    alone = threading.active_count() == 1
    if after_fork is not None and alone and threading.current_thread() is threading.main_thread():
        for _ in range(times):
            after_fork()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for _ in range(times):
            _apply_config({})
            worker = Worker.blank()
            worker.configure(devnull, devnull, {})
            worker.write_frame(HELLO, 0, _hello_payload(os.getpid()))
    finally:
        os.close(devnull)
    _hello_parts = _hello_template()
    _spare = Worker.blank()


#: The blank Worker a forked child takes (:func:`rehearse`): made before the
#: forks, it is each child's own copy, paid for in copied pages only where
#: the child writes; making one in every child wrote many more (~60 here).
_spare: Worker | None = None
#: The HELLO's payload before and after the pid's encoding (:func:`rehearse`).
_hello_parts: tuple[bytes, bytes] | None = None


def _hello(pid: int) -> dict[str, Any]:
    return {
        "protocol": PROTOCOL_VERSION,
        "pid": pid,
        "executable": sys.executable,
        "version_info": tuple(sys.version_info[:3]),
    }


def _hello_payload(pid: int) -> bytes:
    if _hello_parts is None:
        return dumps(_hello(pid))
    return _hello_parts[0] + dumps(pid) + _hello_parts[1]


def _hello_template() -> tuple[bytes, bytes] | None:
    """The HELLO's payload as the bytes before and after its pid's encoding,
    if it is made so (checked on two pids); else None. A forked child then
    encodes its pid alone: encoding the whole HELLO wrote some 30 pages."""
    pids = (os.getpid(), 0x7FFF0001)
    payload = dumps(_hello(pids[0]))
    before, mark, after = payload.partition(dumps(pids[0]))
    if not mark or mark in after:
        return None
    for pid in pids[1:]:
        if before + dumps(pid) + after != dumps(_hello(pid)):
            return None
    return before, after


def main(config: dict[str, Any]) -> None:
    """Take over stdin/stdout as the protocol stream and serve until told to stop."""
    prepare()
    serve(config)


def serve(config: dict[str, Any]) -> None:
    """:func:`main` after :func:`prepare`: where a forked worker starts."""
    rfd = os.dup(0)
    wfd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    # What remote code prints goes to our stderr, which the caller sees;
    # for code run as execnet's (the caller aliased execnet), to /dev/null,
    # as execnet does: xdist's workers print their whole session there.
    os.dup2(devnull if config.get("execnet_alias") else 2, 1)
    os.close(devnull)
    try:
        _apply_config(config)
    except BaseException:
        os.write(wfd, MAGIC)
        message = format_exception().encode("utf-8", "replace")
        os.write(wfd, HEADER.pack(CLOSE_ERROR, 0, len(message)) + message)
        _exit(1)
    worker = Worker.blank() if _spare is None else _spare
    worker.configure(rfd, wfd, config)
    if config.get("execnet_alias"):
        install_execnet_alias()
    os.write(wfd, MAGIC)
    worker.write_frame(HELLO, 0, _hello_payload(os.getpid()))
    if worker.execmodel == "main_thread_only":
        reader = threading.Thread(target=worker.read_loop, name="asyncgw-reader", daemon=True)
        reader.start()
        worker.run_main_jobs()
    else:
        worker.read_loop()
