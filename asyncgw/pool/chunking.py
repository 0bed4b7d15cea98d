"""How many items go in one chunk, when the caller did not say.

A chunk costs a message each way and a wake-up on each side, about as much
as a trivial task itself many times over; a chunk too large leaves the
other gateways idle at the end of a map and keeps results back. So the
size is chosen per function from what its chunks cost on the far side:

- a function not measured yet goes one item at a time, so that slow tasks
  spread over every gateway from the start;
- then chunks aim at :data:`TARGET_SECONDS` of remote work each, from a
  running average of the seconds per item the far side reports;
- never more than :data:`MAX_ITEMS`, and never more than a share of what
  is waiting (:data:`SHARES` chunks per gateway), so the last items still
  spread over every gateway;
- but, once chunks of the same call have been measured, never less than
  :data:`MIN_SECONDS` of remote work (or what waits): a chunk costs tens
  of microseconds of messages and wake-ups on each side, so splitting the
  last items of tiny tasks ever finer costs more than the idle gateways
  it spares (10 000 tasks of ``x + 1`` on 2 gateways went in 58 chunks,
  the last 40 of them under 200 items, and took twice as long as in
  chunks of 1000). Not before: the figure may come from an earlier call
  of the function on much smaller work, and 64 long tasks would then all
  go in one chunk to one gateway;
- a measurement more than :data:`_JUMP` times off the running average
  replaces it: the work has changed, and chunks follow at once.

Pure arithmetic: no I/O, no event loop.
"""

from __future__ import annotations

__all__ = ["MAX_ITEMS", "MIN_SECONDS", "SHARES", "TARGET_SECONDS", "ChunkSizer"]

#: Seconds of remote work a chunk aims at.
TARGET_SECONDS = 0.02
#: Seconds of remote work a chunk carries at least, however little waits
#: per gateway: some thirty times what a chunk costs in messages and
#: wake-ups (about 30 us of CPU on the caller's side alone, with chunksize
#: 1, on the 2-cpu machine the benchmarks run on). 100 000 tasks of
#: ``x + 1`` on 2 gateways: 12-14 chunks at 0.5 ms, 8-11 at 1 ms.
MIN_SECONDS = 0.001
#: Items in a chunk at most.
MAX_ITEMS = 16384
#: Chunks per gateway what is waiting is cut into, at least.
SHARES = 4
#: Weight of the newest measurement in the running average.
_WEIGHT = 0.3
#: A measurement this many times above or below the average replaces it.
_JUMP = 4.0


class ChunkSizer:
    """Chunk sizes for the functions of one pool."""

    def __init__(self) -> None:
        self._per_item: dict[int, float] = {}  # function number -> seconds per item

    def measured(self, function: int, items: int, seconds: float) -> None:
        """A chunk of ``items`` items of ``function`` ran ``seconds`` remotely."""
        if items <= 0:
            return
        sample = max(seconds, 0.0) / items
        known = self._per_item.get(function)
        if known is None or not known / _JUMP <= sample <= known * _JUMP:
            self._per_item[function] = sample
        else:
            self._per_item[function] = known + _WEIGHT * (sample - known)

    def size(self, function: int, waiting: int, gateways: int, measured: bool = True) -> int:
        """Items for the next chunk of ``function``, with ``waiting`` items
        queued in all and ``gateways`` gateways to share them; ``measured``:
        chunks of this call have been measured already (so
        :data:`MIN_SECONDS` applies)."""
        per_item = self._per_item.get(function)
        if per_item is None:
            return 1
        if per_item <= 0:
            return MAX_ITEMS
        wanted = int(TARGET_SECONDS / per_item)
        share = -(-waiting // (SHARES * max(gateways, 1)))
        if measured:
            share = max(share, round(MIN_SECONDS / per_item))
        return max(1, min(wanted, MAX_ITEMS, share))
