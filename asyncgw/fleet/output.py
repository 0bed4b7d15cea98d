"""What a process keeps of one output stream: a bounded tail and counts.

A command may print gigabytes. A :class:`Captured` stream keeps at most
``limit`` bytes — everything while the output is smaller, the last
``limit`` bytes after that — and counts every byte and line that came,
in time linear in the output: chunks are appended to a deque and dropped
from its front, never concatenated, and the text is decoded only when
asked for (and then cached until more output comes).

Lines for handlers and listeners are cut from an incremental decoding of
every chunk, so they see every byte whatever is kept; a line longer than
``limit`` characters reaches them in pieces of ``limit`` characters, so
that an endless line (``cat /dev/zero``) cannot grow memory either.
"""

from __future__ import annotations

import codecs
from collections import deque

__all__ = ["DEFAULT_MAX_OUTPUT", "Captured"]

#: Bytes of each stream a process keeps unless told otherwise (its
#: ``max_output``): 64 MiB, far past what one reads as text, and small
#: enough that a thousand processes printing without end stay in memory.
DEFAULT_MAX_OUTPUT = 64 * 1024 * 1024


def _decoder() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")("replace")


class Captured:
    """One stream's output: the kept tail, the counts, and the line cutter.

    :param limit: bytes kept at most (``None``: everything).
    """

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit <= 0:
            raise ValueError(f"max_output must be positive or None, not {limit!r}")
        self.limit = limit
        #: Bytes that came, in all.
        self.size = 0
        #: Newlines that came, in all.
        self.lines = 0
        #: Bytes that came but are no longer kept (the front of the output).
        self.dropped = 0
        self._chunks: deque[bytes] = deque()
        self._kept = 0
        self._text: str | None = ""
        self._final = False
        # Characters of the dropped front, for expect's positions.
        self._dropped_decoder = _decoder()
        self._dropped_chars = 0
        # The line cutter: a decoder of every chunk, and the line so far.
        self._line_decoder = _decoder()
        self._partial: list[str] = []
        self._partial_chars = 0

    @property
    def kept(self) -> int:
        """Bytes kept now (at most ``limit``)."""
        return self._kept

    def add(self, data: bytes) -> None:
        """Keep ``data``, dropping from the front what exceeds the limit."""
        if not data:
            return
        self.size += len(data)
        self.lines += data.count(b"\n")
        self._chunks.append(data)
        self._kept += len(data)
        self._text = None
        limit = self.limit
        if limit is None:
            return
        while self._kept > limit:
            first = self._chunks[0]
            excess = self._kept - limit
            if len(first) <= excess:
                self._chunks.popleft()
                gone = first
            else:
                gone = first[:excess]
                self._chunks[0] = first[excess:]
            self._kept -= len(gone)
            self.dropped += len(gone)
            self._dropped_chars += len(self._dropped_decoder.decode(gone))

    def text(self, final: bool = False) -> str:
        """The kept bytes as text (UTF-8, bad bytes replaced); while the
        stream goes on (``final`` false), an incomplete character at the
        end waits for the rest of it."""
        if self._text is None or final != self._final:
            data = b"".join(self._chunks)
            start = 0
            if self.dropped:
                # The front was cut, maybe inside a character: skip what
                # is left of it (continuation bytes) rather than show junk.
                while start < min(3, len(data)) and 0x80 <= data[start] < 0xC0:
                    start += 1
            self._text = _decoder().decode(data[start:] if start else data, final)
            self._final = final
        return self._text

    def text_start(self) -> int:
        """Where :meth:`text` starts, in characters of the whole output."""
        pending = self._dropped_decoder.getstate()[0]
        return self._dropped_chars + (1 if pending else 0)

    def tail(self, count: int, final: bool = True) -> str:
        """The last ``count`` characters or so, without decoding all that is kept."""
        data = b""
        for chunk in reversed(self._chunks):
            data = chunk + data
            if len(data) >= 4 * count:
                break
        start = 0
        while start < min(3, len(data)) and 0x80 <= data[start] < 0xC0:
            start += 1
        return _decoder().decode(data[start:], final)[-count:]

    def cut(self, data: bytes, final: bool, whole: bool) -> list[str]:
        """The lines that ``data`` completes (all of them at the end, when
        ``final``), if ``whole``; otherwise only follow where lines end,
        for later. A line past ``limit`` characters comes in pieces."""
        text = self._line_decoder.decode(data, final)
        newline = text.rfind("\n")
        lines: list[str] = []
        if newline < 0:
            if text:
                self._partial.append(text)
                self._partial_chars += len(text)
        elif whole:
            pieces = text.split("\n")
            if self._partial:
                pieces[0] = "".join(self._partial) + pieces[0]
            rest = pieces.pop()
            lines = pieces
            self._partial = [rest] if rest else []
            self._partial_chars = len(rest)
        else:
            rest = text[newline + 1 :]
            self._partial = [rest] if rest else []
            self._partial_chars = len(rest)
        limit = self.limit
        if limit is not None and self._partial_chars > limit:
            line = "".join(self._partial)
            cut = len(line) - len(line) % limit
            lines += [line[i : i + limit] for i in range(0, cut, limit)] if whole else []
            rest = line[cut:]
            self._partial = [rest] if rest else []
            self._partial_chars = len(rest)
        if final and self._partial:
            if whole:
                lines.append("".join(self._partial))
            self._partial = []
            self._partial_chars = 0
        return lines
