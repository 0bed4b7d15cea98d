"""The wire: frame codec and value codec, sans-IO and stdlib-only.

This module is shipped as source to every remote interpreter (Python >= 3.9),
so it imports nothing but the standard library and uses no syntax newer than
3.9. It never reads or writes a stream: callers feed it bytes and get
messages back, or give it messages and get bytes back.

Frames::

    +------+------------+----------------+---------------------+
    | type | channel id | payload length | payload             |
    |  u8  |    u32     |      u32       | `length` bytes      |
    +------+------------+----------------+---------------------+

Values are a tagged binary encoding of a closed set of types (see
``dumps``). Decoding only ever builds those types: it never evaluates or
unpickles anything, and imports nothing but numpy (lazily, and only when
an array arrives: see ``ARRAY_KINDS``).

numpy arrays travel as dtype, shape and raw buffer when numpy is
installed: the module never imports numpy itself (an array is recognised
by its type's name), so it stays stdlib-only and values of every other
type cost nothing more. An array is validated before anything is built:
its dtype string must be one of ``ARRAY_KINDS`` (no object, no structured
dtypes) and its shape times its item size must equal its byte count. An
array arriving where numpy is missing is a ``LoadError`` naming numpy.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False  # typing is not imported at run time: workers start lean
if TYPE_CHECKING:
    from typing import Any, Callable

    ChannelId = Callable[[Any], "int | None"]
    MakeChannel = Callable[[int], Any]

#: Bumped whenever frames or values change incompatibly.
PROTOCOL_VERSION = 1

#: Written by a worker before its first frame; lets the local side tell a
#: live worker from a shell banner or an error message on the same stream.
MAGIC = b"ASYNCGW\n"

# Message types.
HELLO = 1  # remote -> local: first frame, a dict describing the worker
EXEC = 2  # local -> remote: run code, its channel is the frame's channel
DATA = 3  # either way: one value on a channel
CLOSE = 4  # either way: the sender will send no more on this channel
CLOSE_ERROR = 5  # either way: as CLOSE, payload is a formatted traceback
ACK = 6  # either way: payload u64, bytes consumed by the receiver
REQUEST = 7  # local -> remote: built-in query (payload: its name)
TERMINATE = 8  # local -> remote: stop accepting work, finish, exit

MESSAGE_NAMES = {
    HELLO: "HELLO",
    EXEC: "EXEC",
    DATA: "DATA",
    CLOSE: "CLOSE",
    CLOSE_ERROR: "CLOSE_ERROR",
    ACK: "ACK",
    REQUEST: "REQUEST",
    TERMINATE: "TERMINATE",
}

HEADER = struct.Struct("!BII")
HEADER_SIZE = HEADER.size
#: Largest payload a decoder accepts unless told otherwise.
DEFAULT_MAX_PAYLOAD = 256 * 1024 * 1024
#: Deepest nesting of containers a value may have.
MAX_DEPTH = 200
#: Per-frame overhead counted by flow control, so that a flood of tiny
#: frames is bounded as well as a few big ones.
FRAME_COST = 32

_ACK = struct.Struct("!Q")


class AsyncgwError(Exception):
    """Root of every error asyncgw raises."""


class ProtocolError(AsyncgwError):
    """Raised when bytes on the wire are not a valid frame.

    The stream is unusable afterwards: the gateway that read it is closed.

    :ivar frames: the valid frames decoded before the bad one, in order.
    """

    def __init__(
        self, message: str, frames: list[tuple[int, int, bytes | memoryview]] | None = None
    ) -> None:
        super().__init__(message)
        self.frames = frames or []


class DataFormatError(AsyncgwError):
    """Raised when a value cannot be encoded or decoded."""


class DumpError(DataFormatError, TypeError):
    """Raised by ``send`` (before anything is written) for a value of a type
    the wire cannot carry; the message names the type and where it sits."""


class LoadError(DataFormatError, ValueError):
    """Raised when received bytes are not a valid encoded value."""


# ---------------------------------------------------------------- frames


def encode_frame(msgtype: int, channel: int, payload: bytes = b"") -> bytes:
    """Return one frame as bytes."""
    return HEADER.pack(msgtype, channel, len(payload)) + payload


def check_frame_size(payload: bytes, max_payload: int) -> bytes:
    """Return ``payload`` if the peer's decoder accepts it, else raise
    ``DumpError`` naming both sizes: nothing oversized is ever written."""
    if len(payload) > max_payload:
        raise DumpError(
            "an encoded value of %d bytes exceeds the gateway's max_frame of %d bytes"
            % (len(payload), max_payload)
        )
    return payload


def clip_text(text: str, max_payload: int) -> bytes:
    """``text`` as UTF-8 for a CLOSE_ERROR frame, its middle cut out if it
    would exceed ``max_payload`` (a traceback's head and tail say most)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= max_payload:
        return data
    marker = b"\n[... cut to fit max_frame ...]\n"
    keep = (max_payload - len(marker)) // 2
    return data[:keep] + marker + data[len(data) - keep :]


def encode_ack(consumed: int) -> bytes:
    return _ACK.pack(consumed)


def decode_ack(payload: bytes | memoryview) -> int:
    if len(payload) != _ACK.size:
        raise ProtocolError("ACK payload of %d bytes, expected 8" % len(payload))
    return int(_ACK.unpack(payload)[0])


#: A DATA payload this large is gathered by a lending decoder into a buffer
#: of its own and handed out as a view of it (see :class:`FrameDecoder`).
LARGE_FRAME = 64 * 1024
#: A fresh buffer for a large payload holds at most this much beyond what
#: has arrived, so that a header alone never makes a decoder allocate
#: ``max_payload``; it grows (doubling) as more arrives.
LARGE_STEP = 1024 * 1024
#: The largest such buffer kept, once free, for the next large payload:
#: one for the whole process (a fresh one costs its page faults again).
LARGE_KEEP = 8 * 1024 * 1024

_idle_large: list[bytearray] = []  # at most one, shared by every decoder


def _unshared(buffer: bytearray) -> bool:
    """Whether no view of ``buffer`` is alive: a bytearray refuses to change
    size while one is (its size is put back)."""
    try:
        del buffer[-1]
    except BufferError:
        return False
    buffer.append(0)
    return True


class FrameDecoder:
    """Incremental frame decoder: ``feed`` bytes split anywhere, get frames.

    Each frame is a ``(msgtype, channel, payload)`` tuple. A header with an
    unknown type or a length over ``max_payload`` raises ``ProtocolError``
    before any payload is buffered, so a hostile peer cannot make the
    decoder allocate more than ``max_payload`` plus one read.

    Lending (``feed_lending``, or ``buffers`` and ``filled`` for a reader
    that reads into buffers it is given): a DATA payload of
    :data:`LARGE_FRAME` bytes or more is gathered into a buffer the decoder
    reuses — read straight into it, with ``buffers`` — and its frame
    carries a ``memoryview`` of it instead of ``bytes``. The view is valid
    until the next call to the decoder, which releases it (a view kept
    beyond raises ``ValueError`` when used); the buffer is reused only if
    no view of it is left, so a value decoded from it can never change.
    """

    __slots__ = ("_buf", "_fill", "_head", "_large", "_lent", "max_payload")

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._buf = bytearray()
        self.max_payload = max_payload
        self._large: bytearray | None = None  # the large payload under way
        self._head = (0, 0)  # its channel and length
        self._fill = 0  # its bytes arrived
        self._lent: list[memoryview] = []  # handed out since the last call

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet make a whole frame."""
        return len(self._buf) + self._fill

    def feed(self, data: bytes | memoryview) -> list[tuple[int, int, bytes]]:
        """The whole frames that ``data`` completes, in order; the rest is
        kept. ``data`` may be a view of a buffer the caller reuses: nothing
        of it is referenced after the call."""
        if self._lent:
            self._release()
        return self._take(data, [], False)  # type: ignore[return-value]

    def feed_lending(self, data: bytes | memoryview) -> list[tuple[int, int, bytes | memoryview]]:
        """As :meth:`feed`, but a large DATA payload comes as a view, valid
        until the next call to the decoder."""
        if self._lent:
            self._release()
        return self._take(data, [], True)

    def buffers(self, spare: memoryview) -> list[memoryview]:
        """The buffers the next read should fill, in order (for ``readv``):
        the room left in the large payload under way, if any, then
        ``spare``, the reader's own. Then pass what was read to
        :meth:`filled`, before any other call (a read that got nothing may
        ask again instead)."""
        large = self._large
        if self._lent:
            self._release()
            if large is None:
                # After a large payload, most likely another: read its
                # header and little more into spare (each byte read there
                # is copied again), the rest straight into its buffer.
                return [spare[:LARGE_FRAME]]
        if large is None:
            return [spare]
        fill = self._fill
        if fill == len(large):  # full: room for as much again
            large = self._grow(2 * fill)
        return [memoryview(large)[fill : min(len(large), self._head[1])], spare]

    def filled(self, size: int, spare: memoryview) -> list[tuple[int, int, bytes | memoryview]]:
        """The frames completed by a read of ``size`` bytes into the buffers
        :meth:`buffers` returned (``spare`` the last): as :meth:`feed_lending`."""
        frames: list[tuple[int, int, bytes | memoryview]] = []
        large = self._large
        if large is not None:
            length = self._head[1]
            took = min(size, min(len(large), length) - self._fill)
            self._fill += took
            if self._fill < length:
                if took == size:
                    return frames
            else:
                frames.append(self._finish(True))
            size -= took
        return self._take(spare[:size], frames, True) if size else frames

    def _take(
        self,
        data: bytes | memoryview,
        frames: list[tuple[int, int, bytes | memoryview]],
        lend: bool,
    ) -> list[tuple[int, int, bytes | memoryview]]:
        while True:
            if self._large is not None:
                if not data:
                    return frames
                took = self._gather(data)
                if self._fill < self._head[1]:
                    return frames
                frames.append(self._finish(lend))
                data = data[took:]
                continue
            buf = self._buf
            src: bytes | bytearray | memoryview
            if buf:
                buf += data
                src = bytes(buf) if len(buf) < 65536 else buf
            else:
                src = data
            try:
                pos = self._parse(src, frames, lend)
            except ProtocolError:
                self._buf = bytearray()  # the stream is unusable from here on
                raise
            length = 0
            if lend and len(src) - pos >= HEADER_SIZE:
                msgtype, channel, length = HEADER.unpack_from(src, pos)
                if msgtype != DATA:
                    length = 0
            if length < LARGE_FRAME:
                if buf:
                    del buf[:pos]
                elif pos < len(data):
                    buf += data[pos:]
                return frames
            # _parse stopped at a large DATA frame: gather its payload apart.
            if buf:
                self._buf = bytearray()  # src may be the old one: never changed again
            data = memoryview(src)[pos + HEADER_SIZE :]
            self._start(channel, length, len(data))

    def _parse(
        self,
        src: bytes | bytearray | memoryview,
        frames: list[tuple[int, int, bytes | memoryview]],
        lend: bool,
    ) -> int:
        """Append the whole frames of ``src`` to ``frames``; return where the
        rest begins (lending: or a large DATA frame's header)."""
        append = frames.append
        unpack = HEADER.unpack_from
        end = len(src)
        pos = 0
        while end - pos >= HEADER_SIZE:
            msgtype, channel, length = unpack(src, pos)
            if msgtype not in MESSAGE_NAMES:
                raise ProtocolError("unknown message type %d" % msgtype, frames)
            if length > self.max_payload:
                raise ProtocolError(
                    "frame of %d bytes exceeds the maximum of %d" % (length, self.max_payload),
                    frames,
                )
            if lend and length >= LARGE_FRAME and msgtype == DATA:
                break
            start = pos + HEADER_SIZE
            stop = start + length
            if stop > end:
                break
            append((msgtype, channel, bytes(src[start:stop])))
            pos = stop
        return pos

    def _start(self, channel: int, length: int, arrived: int) -> None:
        """Begin a large payload: the idle buffer if it is big enough, else
        a fresh one of at most :data:`LARGE_STEP` beyond what ``arrived``."""
        try:
            large = _idle_large.pop()
        except IndexError:
            large = None
        if large is None or len(large) < length:
            if large is not None:
                _idle_large.append(large)
            large = bytearray(min(length, arrived + LARGE_STEP))
        self._large, self._head, self._fill = large, (channel, length), 0

    def _gather(self, data: bytes | memoryview) -> int:
        """Copy into the large payload what of ``data`` belongs to it."""
        large = self._large
        assert large is not None
        fill = self._fill
        took = min(len(data), self._head[1] - fill)
        if fill + took > len(large):
            large = self._grow(max(fill + took, 2 * len(large)))
        # Through a view: a bytearray's own slice assignment copies a
        # view it is given into a new bytearray first.
        memoryview(large)[fill : fill + took] = data[:took]
        self._fill = fill + took
        return took

    def _grow(self, size: int) -> bytearray:
        """The large payload's buffer made ``size`` long (at most the
        payload's), what arrived kept: a fresh one, copied."""
        large = self._large
        assert large is not None
        fill = self._fill
        bigger = bytearray(min(self._head[1], size))
        memoryview(bigger)[:fill] = memoryview(large)[:fill]
        self._large = bigger
        return bigger

    def _finish(self, lend: bool) -> tuple[int, int, bytes | memoryview]:
        large = self._large
        assert large is not None
        channel, length = self._head
        self._large, self._fill = None, 0
        if not lend:
            self._idle(large)
            return (DATA, channel, bytes(memoryview(large)[:length]))
        view = memoryview(large)[:length]
        self._lent.append(view)
        return (DATA, channel, view)

    def _release(self) -> None:
        """Take back what was lent: each view is released, and its buffer,
        if no other view of it is left, kept for the next large payload."""
        lent, self._lent = self._lent, []
        for view in lent:
            large = view.obj
            try:
                view.release()
            except BufferError:  # something holds a buffer of the view itself
                continue
            self._idle(large)  # type: ignore[arg-type]

    @staticmethod
    def _idle(large: bytearray) -> None:
        if len(large) > LARGE_KEEP or not _unshared(large):
            return
        try:
            kept = _idle_large.pop()
        except IndexError:
            kept = large
        _idle_large.append(large if len(large) >= len(kept) else kept)


# ---------------------------------------------------------------- values
#
# Tags, one byte each, then the body:
#   N T F            None True False
#   i <i64>          int that fits 64 bits
#   I <u32 n> <n>    any other int, signed big-endian two's complement
#   f <f64>  c <f64 f64>
#   s <u32 n> utf-8  b <u32 n> bytes
#   l t S z <u32 n> items      list tuple set frozenset
#   d <u32 n> key value ...    dict
#   C <u32 id>                 channel
#   A <u8 n> dtype <u8 ndim> <u64 dim>*ndim <u64 nbytes> raw   numpy array
#                              (dtype: numpy's dtype.str, e.g. '<f8', '|b1')

_U32 = struct.Struct("!I")
_I64 = struct.Struct("!q")
_TAGGED_I64 = struct.Struct("!Bq")  # an int's whole encoding: b"i" and its value
_F64 = struct.Struct("!d")
_TAGGED_U32 = struct.Struct("!BI")  # a tag and a length: a str's or container's head
_TAGGED_F64 = struct.Struct("!Bd")
_C128 = struct.Struct("!dd")
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_U64 = struct.Struct("!Q")

#: The numpy dtype kinds that travel, with their allowed item sizes (None:
#: any, for the fixed-width ``S`` bytes and ``U`` text). Every one is plain
#: data: no object references, no fields, nothing numpy must interpret.
ARRAY_KINDS: dict[str, tuple[int, ...] | None] = {
    "b": (1,),
    "i": (1, 2, 4, 8),
    "u": (1, 2, 4, 8),
    "f": (2, 4, 8),
    "c": (8, 16),
    "S": None,
    "U": None,
}
#: Most dimensions an array may have (numpy's own limit is 64).
ARRAY_MAX_NDIM = 32


def _array_itemsize(dtype: str) -> int:
    """The item size of an allowed dtype string such as ``'<f8'``; raise
    ``ValueError`` for any other (computed without numpy, so that a side
    without numpy validates as strictly as one with it)."""
    if len(dtype) < 3 or dtype[0] not in "<>|" or not dtype[2:].isdigit() or not dtype.isascii():
        raise ValueError("not a plain numpy dtype: %r" % dtype)
    kind, size = dtype[1], int(dtype[2:])
    if kind not in ARRAY_KINDS or size < 1:
        raise ValueError("numpy dtype %r is not one that travels" % dtype)
    sizes = ARRAY_KINDS[kind]
    if sizes is not None and size not in sizes:
        raise ValueError("numpy dtype %r is not one that travels" % dtype)
    return size * 4 if kind == "U" else size


class _Unencodable(Exception):
    """Internal: carries the offending type and its path while unwinding."""

    def __init__(self, obj: object, path: list[str], reason: str = "") -> None:
        super().__init__()
        self.obj = obj
        self.path = path
        self.reason = reason


def dumps(obj: object, channel_id: ChannelId | None = None) -> bytes:
    """Encode ``obj``; ``channel_id(obj)`` returns a channel's id or None.

    :raises DumpError: naming the type and its location, e.g. ``value[2]['k']``.
    """
    if type(obj) is int and _I64_MIN <= obj <= _I64_MAX:  # the commonest value, directly
        return _TAGGED_I64.pack(0x69, obj)
    t = type(obj)
    if t is tuple or t is list:
        flat = _dump_flat(obj, 0x74 if t is tuple else 0x6C)
        if flat is not None:
            return flat
    return b"".join(_dump_parts(obj, channel_id))


def _dump_flat(obj: Any, tag: int) -> bytes | None:
    """A tuple's or list's encoding if it holds only plain 64-bit ints,
    short str, None, bools and floats (an object request, its reply, a
    pool's item), in one loop with no call per item; else None (the
    general encoder does it). The bytes are the general encoder's."""
    parts = [_TAGGED_U32.pack(tag, len(obj))]
    append = parts.append
    for item in obj:
        t = type(item)
        if t is int:
            try:
                append(_TAGGED_I64.pack(0x69, item))
            except struct.error:  # beyond 64 bits: an I
                return None
        elif t is str:
            data = item.encode("utf-8", "surrogatepass")
            if len(data) >= LARGE_FRAME:  # dumps_parts keeps a large body apart
                return None
            append(_TAGGED_U32.pack(0x73, len(data)) + data)
        elif item is None:
            append(b"N")
        elif t is bool:
            append(b"T" if item else b"F")
        elif t is float:
            append(_TAGGED_F64.pack(0x66, item))
        else:
            return None
    return b"".join(parts)


def dumps_parts(obj: object, channel_id: ChannelId | None = None) -> list[bytes | memoryview]:
    """As :func:`dumps`, but a value whose encoding has a body of
    :data:`LARGE_FRAME` bytes or more (a bytes or str value's, an array's)
    in at most 64 pieces comes as those pieces, not copied together: write
    them one after the other, before the value can change (an array's body
    is a view of its own buffer). Else a list of one bytes.

    :raises DumpError: as :func:`dumps`.
    """
    t = type(obj)
    if t is tuple or t is list:
        flat = _dump_flat(obj, 0x74 if t is tuple else 0x6C)
        if flat is not None:
            return [flat]
    parts = _dump_parts(obj, channel_id)
    if 1 < len(parts) <= 64:
        for part in parts:
            if len(part) >= LARGE_FRAME:
                return parts
    return [b"".join(parts)]


def _dump_parts(obj: object, channel_id: ChannelId | None) -> list[bytes | memoryview]:
    parts: list[bytes | memoryview] = []
    try:
        _encode(obj, parts.append, channel_id, 0)
    except _Unencodable as exc:
        where = "value" + "".join(reversed(exc.path))
        kind = type(exc.obj)
        if exc.reason:
            raise DumpError(
                "can't serialize the numpy array at %s: %s" % (where, exc.reason)
            ) from None
        if isinstance(exc.obj, _TooDeep):
            raise DumpError(
                "cannot send a value nested deeper than %d (or a recursive container)" % MAX_DEPTH
            ) from None
        raise DumpError(
            "can't serialize %s.%s at %s: only None, bool, int, float, complex, str, "
            "bytes, list, tuple, dict, set, frozenset, numpy arrays and channels travel"
            % (kind.__module__, kind.__qualname__, where)
        ) from None
    return parts


def dumps_bulk(obj: object) -> tuple[bytes, bytes] | None:
    """For a bytes or str value of :data:`LARGE_FRAME` bytes or more: the
    payload ``dumps`` makes of it, as its 5-byte head and its body (the
    value itself, for bytes), to be written one after the other instead of
    copied together; else None."""
    t = type(obj)
    if t is bytes:
        data: bytes = obj  # type: ignore[assignment]
    elif t is str and len(obj) >= LARGE_FRAME // 4:  # type: ignore[arg-type]
        data = obj.encode("utf-8", "surrogatepass")  # type: ignore[attr-defined]
    else:
        return None
    if len(data) < LARGE_FRAME:
        return None
    return (b"b" if t is bytes else b"s") + _U32.pack(len(data)), data


class _TooDeep:
    pass


def _encode(
    obj: Any, out: Callable[[bytes], None], channel_id: ChannelId | None, depth: int
) -> None:
    t = type(obj)
    if t is int:
        if _I64_MIN <= obj <= _I64_MAX:
            out(b"i" + _I64.pack(obj))
        else:
            n = obj.bit_length() // 8 + 1
            out(b"I" + _U32.pack(n) + obj.to_bytes(n, "big", signed=True))
    elif t is str:
        data = obj.encode("utf-8", "surrogatepass")
        out(b"s" + _U32.pack(len(data)))
        out(data)
    elif t is bytes:
        out(b"b" + _U32.pack(len(obj)))
        out(obj)
    elif obj is None:
        out(b"N")
    elif obj is True:
        out(b"T")
    elif obj is False:
        out(b"F")
    elif t is float:
        out(b"f" + _F64.pack(obj))
    elif t in _CONTAINER_TAGS:
        if depth >= MAX_DEPTH:
            raise _Unencodable(_TooDeep(), [])
        out(_CONTAINER_TAGS[t] + _U32.pack(len(obj)))
        if t is dict:
            for key, value in obj.items():
                try:
                    _encode(key, out, channel_id, depth + 1)
                    _encode(value, out, channel_id, depth + 1)
                except _Unencodable as exc:
                    exc.path.append("[%r]" % (key,))
                    raise
        else:
            for index, item in enumerate(obj):
                # Plain ints, the most common items (ids, counts, packed
                # requests), without a call of their own.
                if type(item) is int and _I64_MIN <= item <= _I64_MAX:
                    out(_TAGGED_I64.pack(0x69, item))
                    continue
                try:
                    _encode(item, out, channel_id, depth + 1)
                except _Unencodable as exc:
                    exc.path.append("[%d]" % index if t in (list, tuple) else "{item}")
                    raise
    elif t is complex:
        out(b"c" + _C128.pack(obj.real, obj.imag))
    elif t.__name__ == "ndarray" and t.__module__ == "numpy":  # never imports numpy
        _encode_array(obj, out)
    else:
        ident = channel_id(obj) if channel_id is not None else None
        if ident is None:
            raise _Unencodable(obj, [])
        out(b"C" + _U32.pack(ident))


def _encode_array(obj: Any, out: Callable[[Any], None]) -> None:
    # The buffer goes out as a view: ``dumps`` joins it into the payload,
    # the one copy every bytes value costs too (no tobytes() on the way).
    dtype = obj.dtype
    code = dtype.str
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise _Unencodable(
            obj,
            [],
            "its dtype %s holds objects or fields; only plain bool, int, uint, "
            "float, complex, bytes (S) and str (U) dtypes travel" % dtype,
        )
    try:
        _array_itemsize(code)
    except ValueError:
        raise _Unencodable(
            obj,
            [],
            "its dtype %s (%s) is not one that travels; only plain bool, int, uint, "
            "float (2, 4, 8 bytes), complex (8, 16 bytes), bytes (S) and str (U) dtypes do"
            % (dtype, code),
        ) from None
    if obj.ndim > ARRAY_MAX_NDIM:
        raise _Unencodable(obj, [], "it has more than %d dimensions" % ARRAY_MAX_NDIM)
    if not obj.flags.c_contiguous:
        obj = obj.copy(order="C")  # the one copy a strided array needs
    name = code.encode("ascii")
    out(
        b"A"
        + bytes((len(name),))
        + name
        + bytes((obj.ndim,))
        + b"".join(_U64.pack(dim) for dim in obj.shape)
        + _U64.pack(obj.nbytes)
    )
    if obj.nbytes:
        out(memoryview(obj.reshape(-1).view("u1")))


_CONTAINER_TAGS: dict[type, bytes] = {
    list: b"l",
    tuple: b"t",
    dict: b"d",
    set: b"S",
    frozenset: b"z",
}


def loads(data: bytes | memoryview, make_channel: MakeChannel | None = None) -> Any:
    """Decode one value; ``make_channel(id)`` turns a channel id into a channel.
    ``data`` may be a view (a lent frame's payload): the value references
    nothing of it.

    :raises LoadError: for any malformed input, never anything else.
    """
    try:
        if data and (data[0] == 0x74 or data[0] == 0x6C):  # t l: perhaps flat
            flat = _load_flat(data)
            if flat is not None:
                return flat
        obj, pos = _decode(data, 0, make_channel, 0)
    except LoadError:
        raise
    except (struct.error, IndexError):
        raise LoadError("truncated value") from None
    except UnicodeDecodeError as exc:
        raise LoadError("invalid UTF-8 in string: %s" % exc) from None
    except TypeError as exc:  # unhashable key or set member
        raise LoadError("invalid value: %s" % exc) from None
    if pos != len(data):
        raise LoadError("%d trailing bytes after value" % (len(data) - pos))
    return obj


#: Decoders of a tuple or list of n plain ints, by n: its head, then each
#: int's tag skipped (``x``, checked beforehand) and its value.
_INT_RUNS = [struct.Struct("!BI" + "xq" * n) for n in range(17)]


def _load_flat(data: bytes | memoryview) -> Any:
    """A whole payload that is a tuple or list of plain ints, str, None,
    bools and floats (what :func:`_dump_flat` makes), decoded in one loop
    with no call per item; None for any other (the general decoder then
    decodes it, or says what is wrong with it). Bounds are checked as the
    general decoder checks them: ``struct.error`` and ``IndexError`` for
    truncated data, ``UnicodeDecodeError``, are its caller's to turn into
    ``LoadError``."""
    end = len(data)
    n = (end - 5) // 9
    if n < len(_INT_RUNS) and end == 5 + 9 * n and data[5::9] == b"i" * n:
        # Every item an int (tags at every 9th byte, and the length exact
        # for that many): one unpack.
        values = _INT_RUNS[n].unpack(data)
        if values[1] == n:
            return values[2:] if data[0] == 0x74 else list(values[2:])
    (n,) = _U32.unpack_from(data, 1)
    if n > end - 5:  # every item takes at least a byte
        return None
    items: list[Any] = []
    append = items.append
    pos = 5
    for _ in range(n):
        tag = data[pos]
        if tag == 0x69:  # i
            append(_I64.unpack_from(data, pos + 1)[0])
            pos += 9
        elif tag == 0x73:  # s
            start = pos + 5
            pos = start + _U32.unpack_from(data, pos + 1)[0]
            if pos > end:
                return None
            append(str(data[start:pos], "utf-8", "surrogatepass"))
        elif tag == 0x4E:  # N
            append(None)
            pos += 1
        elif tag == 0x54:  # T
            append(True)
            pos += 1
        elif tag == 0x46:  # F
            append(False)
            pos += 1
        elif tag == 0x66:  # f
            append(_F64.unpack_from(data, pos + 1)[0])
            pos += 9
        else:
            return None
    if pos != end:
        return None
    return tuple(items) if data[0] == 0x74 else items


def _decode(
    data: bytes | memoryview, pos: int, make_channel: MakeChannel | None, depth: int
) -> tuple[Any, int]:
    tag = data[pos]
    pos += 1
    if tag == 0x69:  # i
        return _I64.unpack_from(data, pos)[0], pos + 8
    if tag == 0x73 or tag == 0x62:  # s b
        (n,) = _U32.unpack_from(data, pos)
        pos += 4
        end = pos + n
        if end > len(data):
            raise LoadError("truncated value")
        raw = data[pos:end]  # a copy of bytes, a view of a view
        if tag == 0x62:
            return bytes(raw), end
        return str(raw, "utf-8", "surrogatepass"), end
    if tag == 0x4E:  # N
        return None, pos
    if tag == 0x54:  # T
        return True, pos
    if tag == 0x46:  # F
        return False, pos
    if tag == 0x66:  # f
        return _F64.unpack_from(data, pos)[0], pos + 8
    kind = _CONTAINER_KINDS.get(tag)
    if kind is not None:
        if depth >= MAX_DEPTH:
            raise LoadError("value nested deeper than %d" % MAX_DEPTH)
        (n,) = _U32.unpack_from(data, pos)
        pos += 4
        per_item = 2 if kind is dict else 1
        if n * per_item > len(data) - pos:  # every item takes at least a byte
            raise LoadError("container claims %d items, more than the data holds" % n)
        depth += 1
        if kind is dict:
            result: dict[object, object] = {}
            for _ in range(n):
                key, pos = _decode(data, pos, make_channel, depth)
                result[key], pos = _decode(data, pos, make_channel, depth)
            return result, pos
        items = []
        for _ in range(n):
            if data[pos] == 0x69:  # i: an int without a call of its own
                items.append(_I64.unpack_from(data, pos + 1)[0])
                pos += 9
                continue
            item, pos = _decode(data, pos, make_channel, depth)
            items.append(item)
        return (items if kind is list else kind(items)), pos
    if tag == 0x49:  # I
        (n,) = _U32.unpack_from(data, pos)
        pos += 4
        if pos + n > len(data):
            raise LoadError("truncated value")
        return int.from_bytes(data[pos : pos + n], "big", signed=True), pos + n
    if tag == 0x63:  # c
        real, imag = _C128.unpack_from(data, pos)
        return complex(real, imag), pos + 16
    if tag == 0x43:  # C
        (ident,) = _U32.unpack_from(data, pos)
        if make_channel is None:
            raise LoadError("a channel arrived where none can be received")
        return make_channel(ident), pos + 4
    if tag == 0x41:  # A
        return _decode_array(data, pos)
    raise LoadError("unknown value tag %r at offset %d" % (bytes([tag]), pos - 1))


_CONTAINER_KINDS: dict[int, type] = {
    0x6C: list,
    0x74: tuple,
    0x64: dict,
    0x53: set,
    0x7A: frozenset,
}


def _decode_array(data: bytes | memoryview, pos: int) -> tuple[Any, int]:
    # Everything is checked before numpy is imported or memory is taken.
    n = data[pos]
    code = bytes(data[pos + 1 : pos + 1 + n]).decode("ascii", "replace")
    pos += 1 + n
    try:
        itemsize = _array_itemsize(code)
    except ValueError as exc:
        raise LoadError(str(exc)) from None
    ndim = data[pos]
    pos += 1
    if ndim > ARRAY_MAX_NDIM:
        raise LoadError("numpy array of %d dimensions, more than %d" % (ndim, ARRAY_MAX_NDIM))
    shape = struct.unpack_from("!%dQ" % ndim, data, pos)
    pos += 8 * ndim
    (nbytes,) = _U64.unpack_from(data, pos)
    pos += 8
    count = 1
    for dim in shape:
        count *= dim
    if count * itemsize != nbytes:
        raise LoadError(
            "numpy array of shape %s and dtype %s claims %d bytes" % (shape, code, nbytes)
        )
    end = pos + nbytes
    if end > len(data):
        raise LoadError("truncated value")
    try:
        import numpy
    except ImportError:
        raise LoadError(
            "a numpy array (dtype %s, shape %s) arrived but numpy is not installed here"
            % (code, shape)
        ) from None
    # A copy of its own: writable, aligned, and the frame is not kept alive.
    try:
        array = numpy.empty(shape, dtype=numpy.dtype(code))
    except (ValueError, TypeError, MemoryError) as exc:  # e.g. a dimension numpy refuses
        raise LoadError("numpy array of shape %s refused: %s" % (shape, exc)) from None
    if nbytes:
        array.reshape(-1).view("u1")[:] = numpy.frombuffer(data, "u1", nbytes, pos)
        # Values numpy's own code does not expect: bools other than 0 and
        # 1 (made 1, as numpy reads them), code points past U+10FFFF (they
        # would fail where the array is read, not here).
        kind = code[1]
        if kind == "b":
            raw = array.reshape(-1).view("u1")
            numpy.not_equal(raw, 0, out=raw, casting="unsafe")
        elif kind == "U" and (array.reshape(-1).view(code[0] + "u4") > 0x10FFFF).any():
            raise LoadError("numpy str array with code points past U+10FFFF")
    return array, end
