"""Who reads the worker's input stream: a duty, handed between threads.

One thread at a time holds the reading duty: it reads frames and
dispatches them. Most dispatching is quick, but a served request
(``Channel._serve``) runs inline, on the reader, so that a quick call
costs no thread switch on either side of it. Should one run long (a slow
method, a coroutine awaited, a send waiting for window), the other
channels must not wait for it: a watchdog thread, polling every
``takeover_after`` seconds while inline work happens, sees the same piece
still running and hands the duty to a spare thread (started if none is
parked). The thread that lost the duty finishes its piece, then parks as
the next spare; so the number of readers is the peak number of slow
pieces at once, plus one.

The thread waiting for a value reads for itself, too: when the reader
delivers a value to a thread waiting in ``receive`` (and has nothing else
read but not dispatched), it gives that thread the duty with the value
(:meth:`give`, :meth:`accept`) and stops reading. The thread runs its
code holding the duty, *away* from reading, and its next ``receive``
reads the pipe itself (:meth:`read_for`): an exchange of values with one
remote thread then costs no thread switch. Away is watched like inline
work, and a thread that is about to wait for something else, or whose
code ends, hands the duty on at once (:meth:`step_aside`).

Frames decoded but not yet dispatched stay in the shared queue for
whoever reads next. The duty changes hands only inside inline work, never
between taking a frame and dispatching it, so frames are dispatched in
order, and only one thread ever reads. Stdlib only, Python 3.9 syntax,
shipped as source with the worker.
"""

from __future__ import annotations

import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

__all__ = ["ReadingDuty"]


class ReadingDuty:
    """The reading duty of one worker; ``read`` is its body for one thread.

    ``read(generation, ready)`` reads and dispatches for as long as
    ``generation`` is the duty's current one and ``ready`` (if not None)
    returns false; :meth:`serve` loops a thread between holding the duty
    and waiting as a spare.
    """

    def __init__(
        self,
        read: Callable[[int, Callable[[], bool] | None], None],
        takeover_after: float,
        quiet_polls: int,
    ) -> None:
        self._read = read
        self._takeover_after = takeover_after
        self._quiet_polls = quiet_polls
        self._lock = threading.Lock()
        self._spare_wake = threading.Condition(self._lock)  # a spare waits here
        self._watch_wake = threading.Condition(self._lock)  # the sleeping watchdog
        self.generation = 0  # the duty's current generation (read by the reader)
        self._reader = 0  # ident of the thread holding the duty
        self._unclaimed = False  # a new generation waits for a spare to claim it
        self._spares = 0
        # The holder's token while it is not reading: inline work, or away
        # (running its own code); the watchdog takes over from a token that
        # stays put. Away tokens are the ones read_for may resume from.
        self._inline: list[int] | None = None
        self._away = False
        self._pieces = 0  # inline pieces begun, ever
        self._watching = False  # the watchdog thread is started
        self._watch_asleep = False

    def serve(self) -> None:
        """Hold the duty now (the first reader), then serve as a spare."""
        with self._lock:
            self._reader = threading.get_ident()
            generation = self.generation
        self._serve_from(generation)

    def _serve_from(self, generation: int) -> None:
        while True:
            self._read(generation, None)  # returns when the duty went elsewhere
            generation = self._claim()

    def _claim(self) -> int:
        """Park until a takeover hands this thread the duty."""
        with self._lock:
            self._spares += 1
            while not self._unclaimed:
                self._spare_wake.wait()
            self._spares -= 1
            self._unclaimed = False
            self._reader = threading.get_ident()
            return self.generation

    def run_inline(self, function: Callable[..., None], *args: Any) -> None:
        """Run ``function(*args)`` for the reader, where another thread may
        take over the reading if it runs long. From any other thread it
        just runs (nothing waits on it)."""
        if threading.get_ident() != self._reader:
            function(*args)
            return
        token = self._leave(away=False)
        try:
            function(*args)
        finally:
            if self._inline is token:
                with self._lock:
                    if self._inline is token:
                        self._inline = None

    def _leave(self, away: bool) -> list[int]:
        """Mark the holder (this thread) as not reading, watched."""
        token = [self.generation]
        self._inline, self._away = token, away
        self._pieces += 1
        # The watchdog sets _watch_asleep, then re-counts pieces: as we
        # count, then look, one of the two always sees the other.
        if not self._watching or self._watch_asleep:
            self._wake_watchdog()
        return token

    def read_for(self, ready: Callable[[], bool]) -> bool:
        """For a thread about to wait for a value (``ready()`` is false):
        if it holds the duty, away, read until ``ready()``. False if it does
        not hold the duty (then it must wait to be woken); else whether
        ``ready()`` now (the duty may have gone meanwhile)."""
        me = threading.get_ident()
        if me != self._reader or not self._away:
            return False
        with self._lock:
            if me != self._reader or not self._away:
                return False
            self._inline, self._away = None, False
            generation = self.generation
        try:
            self._read(generation, ready)
        except BaseException:  # interrupted: the reading must go on elsewhere
            with self._lock:
                if self._reader == me:
                    self._take_over()
            raise
        if self._reader == me:
            self._leave(away=True)  # back to its code, holding the duty
        return ready()

    def give(self) -> int | None:
        """From the reader, delivering a value to a thread that waits in
        ``receive``: stop reading, and offer the duty to whoever takes the
        value (:meth:`accept`). None: this thread cannot give it."""
        me = threading.get_ident()
        if me != self._reader or self._inline is not None:
            return None
        with self._lock:
            if me != self._reader or self._inline is not None:
                return None
            self.generation += 1
            self._reader = 0
            generation = self.generation
        self._leave(away=False)  # watched: a spare takes it if nobody does
        return generation

    def accept(self, generation: int) -> None:
        """Take the duty given with a value, if it is still on offer."""
        with self._lock:
            if self.generation != generation or self._reader or self._unclaimed:
                return
            self._reader = threading.get_ident()
        self._leave(away=True)

    def step_aside(self) -> bool:
        """Before this thread waits for what only a reader can deliver: if
        it holds the duty inside inline work, hand the duty over now (the
        watchdog would, but only later). False if it holds the duty outside
        inline work (a plain callback, whose values must stay in order):
        it must not wait."""
        me = threading.get_ident()
        if me != self._reader:
            return True
        with self._lock:
            if me != self._reader:
                return True
            if self._inline is None:
                return False
            self._take_over()
            return True

    def _wake_watchdog(self) -> None:
        with self._lock:
            if not self._watching:
                self._watching = True
                thread = threading.Thread(target=self._watch, name="asyncgw-watch", daemon=True)
                thread.start()
            elif self._watch_asleep:
                self._watch_asleep = False
                self._watch_wake.notify()

    def _watch(self) -> None:
        quiet = 0
        pieces = -1
        with self._lock:
            while True:
                inline = self._inline
                self._watch_wake.wait(self._takeover_after)
                if inline is not None and self._inline is inline:
                    self._take_over()
                if self._pieces != pieces or self._inline is not None:
                    quiet, pieces = 0, self._pieces
                    continue
                quiet += 1
                if quiet < self._quiet_polls:
                    continue
                self._watch_asleep = True  # until run_inline wakes us
                if self._pieces != pieces:
                    self._watch_asleep = False
                    continue
                while self._watch_asleep:
                    self._watch_wake.wait()
                quiet = 0

    def _take_over(self) -> None:
        """Move the duty to a spare (caller holds the lock). The reader
        stuck inline stops reading once its piece ends."""
        self._inline, self._away = None, False
        self.generation += 1
        self._reader = 0
        self._unclaimed = True
        if self._spares:
            self._spare_wake.notify()
        else:
            thread = threading.Thread(target=self._spare, name="asyncgw-reader", daemon=True)
            thread.start()

    def _spare(self) -> None:
        self._serve_from(self._claim())
