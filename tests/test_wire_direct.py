"""The frame decoder's lending paths: large DATA payloads gathered (or read
straight) into a reused buffer and handed out as views (``feed_lending``,
``buffers``/``filled``), and values decoded from such views."""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import asyncgw
from asyncgw import _wire
from asyncgw._wire import DATA, EXEC, FrameDecoder, ProtocolError, dumps, encode_frame, loads


@pytest.fixture
def small_large(monkeypatch: pytest.MonkeyPatch) -> None:
    """Payloads of 16 bytes are large; fresh buffers start 8 bytes beyond
    what arrived, and 64 are kept: every path on streams of a few hundred bytes."""
    monkeypatch.setattr(_wire, "LARGE_FRAME", 16)
    monkeypatch.setattr(_wire, "LARGE_STEP", 8)
    monkeypatch.setattr(_wire, "LARGE_KEEP", 64)
    monkeypatch.setattr(_wire, "_idle_large", [])


def _stream(frames: list[tuple[int, int, bytes]]) -> bytes:
    return b"".join(encode_frame(*frame) for frame in frames)


def _as_bytes(frames: list[tuple[int, int, bytes | memoryview]]) -> list[tuple[int, int, bytes]]:
    """Copies, taken at once: a view is valid only until the next call."""
    return [(msgtype, channel, bytes(payload)) for msgtype, channel, payload in frames]


def _read_all(stream: bytes, sizes: Iterator[int], spare_size: int) -> list[tuple[int, int, bytes]]:
    """Decode ``stream`` as a reader using ``buffers``/``filled`` would, each
    read (as readv fills buffers in order) at most the next of ``sizes``."""
    decoder = FrameDecoder()
    spare = memoryview(bytearray(spare_size))
    got: list[tuple[int, int, bytes]] = []
    pos = 0
    while pos < len(stream):
        buffers = decoder.buffers(spare)
        limit = next(sizes)
        size = 0
        for buffer in buffers:
            take = min(len(buffer), limit - size, len(stream) - pos)
            buffer[:take] = stream[pos : pos + take]
            pos += take
            size += take
        assert size > 0
        got += _as_bytes(decoder.filled(size, spare))
    assert decoder.buffered == 0
    return got


FRAMES = [
    (DATA, 1, b"x" * 40),  # large
    (DATA, 3, b"ab"),
    (EXEC, 5, b"e" * 40),  # large, but not DATA: always bytes
    (DATA, 7, b"y" * 16),  # just large
    (DATA, 7, b"z" * 15),  # just not
    (DATA, 9, b"w" * 100),  # grows past its first buffer
    (DATA, 11, b""),
    (DATA, 13, b"v" * 30),  # large, right after another
]


def test_a_stream_split_at_every_boundary(small_large: None) -> None:
    stream = _stream(FRAMES)
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        got = _as_bytes(decoder.feed_lending(stream[:cut]))
        got += _as_bytes(decoder.feed_lending(stream[cut:]))
        assert got == FRAMES, cut
        assert decoder.buffered == 0


def test_a_stream_split_at_every_pair_of_boundaries(small_large: None) -> None:
    stream = _stream(FRAMES[:4])
    for first, second in itertools.combinations(range(len(stream) + 1), 2):
        decoder = FrameDecoder()
        got = []
        for start, stop in ((0, first), (first, second), (second, len(stream))):
            got += _as_bytes(decoder.feed_lending(stream[start:stop]))
        assert got == FRAMES[:4], (first, second)


@pytest.mark.parametrize("read_size", [1, 2, 3, 7, 13, 14, 15, 16, 17, 50, 1000])
@pytest.mark.parametrize("spare_size", [1, 13, 64, 4096])
def test_reads_into_the_buffers_it_gives(
    small_large: None, read_size: int, spare_size: int
) -> None:
    assert _read_all(_stream(FRAMES), itertools.repeat(read_size), spare_size) == FRAMES


frames_strategy = st.lists(
    st.tuples(
        st.sampled_from([DATA, DATA, DATA, EXEC, _wire.ACK]),
        st.integers(min_value=0, max_value=2**32 - 1),
        st.binary(max_size=120),
    ),
    max_size=10,
)


@settings(max_examples=300, deadline=None)
@given(
    frames_strategy,
    st.lists(st.integers(min_value=0, max_value=600), max_size=12),
    st.lists(st.integers(min_value=1, max_value=90), min_size=1, max_size=12),
    st.integers(min_value=1, max_value=200),
)
def test_any_frames_survive_any_split_both_ways(
    frames: list[tuple[int, int, bytes]], cuts: list[int], reads: list[int], spare_size: int
) -> None:
    stream = _stream(frames)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_wire, "LARGE_FRAME", 16)
        patch.setattr(_wire, "LARGE_STEP", 8)
        points = sorted({min(cut, len(stream)) for cut in cuts} | {0, len(stream)})
        decoder = FrameDecoder()
        got = []
        for start, stop in itertools.pairwise(points):
            got += _as_bytes(decoder.feed_lending(stream[start:stop]))
        assert got == frames
        assert decoder.buffered == 0
        assert _read_all(stream, itertools.cycle(reads), spare_size) == frames


def test_large_data_payloads_come_as_views_others_as_bytes(small_large: None) -> None:
    frames = FrameDecoder().feed_lending(_stream(FRAMES))
    kinds = [type(payload) for _, _, payload in frames]
    assert kinds == [memoryview, bytes, bytes, memoryview, bytes, memoryview, bytes, memoryview]
    # feed never lends
    frames = FrameDecoder().feed(_stream(FRAMES))
    assert {type(payload) for _, _, payload in frames} == {bytes}


def test_a_lent_view_is_released_by_the_next_call(small_large: None) -> None:
    decoder = FrameDecoder()
    ((_, _, view),) = decoder.feed_lending(encode_frame(DATA, 1, b"a" * 20))
    assert bytes(view) == b"a" * 20
    decoder.feed_lending(b"")
    with pytest.raises(ValueError, match="released"):
        bytes(view)


def test_a_buffer_is_reused_once_free_and_never_while_viewed(small_large: None) -> None:
    decoder = FrameDecoder()
    ((_, _, first),) = decoder.feed_lending(encode_frame(DATA, 1, b"a" * 20))
    buffer = first.obj
    ((_, _, second),) = decoder.feed_lending(encode_frame(DATA, 1, b"b" * 20))
    assert second.obj is buffer  # the first view was released: its buffer is free
    kept = second[:5]  # a view of the view, kept beyond the next call
    ((_, _, third),) = decoder.feed_lending(encode_frame(DATA, 1, b"c" * 20))
    assert third.obj is not buffer
    assert bytes(kept) == b"bbbbb"  # never written again
    ((_, _, fourth),) = decoder.feed_lending(encode_frame(DATA, 1, b"d" * 20))
    assert fourth.obj is not buffer  # still viewed through kept
    assert bytes(kept) == b"bbbbb"
    del kept


def test_two_large_frames_of_one_read_have_buffers_of_their_own(small_large: None) -> None:
    decoder = FrameDecoder()
    stream = encode_frame(DATA, 1, b"a" * 20) + encode_frame(DATA, 3, b"b" * 30)
    (_, _, first), (_, _, second) = decoder.feed_lending(stream)
    assert first.obj is not second.obj
    assert (bytes(first), bytes(second)) == (b"a" * 20, b"b" * 30)


def test_buffers_kept_idle_are_bounded(small_large: None) -> None:
    decoder = FrameDecoder()
    decoder.feed_lending(encode_frame(DATA, 1, b"a" * 100))  # more than LARGE_KEEP
    decoder.feed_lending(b"")
    assert _wire._idle_large == []
    decoder.feed_lending(encode_frame(DATA, 1, b"a" * 40))
    decoder.feed_lending(encode_frame(DATA, 1, b"a" * 20))
    decoder.feed_lending(b"")
    assert [len(buffer) for buffer in _wire._idle_large] == [40]  # one, the larger


def test_a_header_announcing_a_huge_length_takes_little_memory() -> None:
    decoder = FrameDecoder(max_payload=1 << 30)
    header = _wire.HEADER.pack(DATA, 1, (1 << 30) - 1)
    tracemalloc.start()
    try:
        decoder.feed_lending(header + b"x" * 100)
        (room, _) = decoder.buffers(memoryview(bytearray(16)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoder.buffered == 100
    assert len(room) <= _wire.LARGE_STEP
    assert peak < _wire.LARGE_STEP + 256 * 1024
    with pytest.raises(ProtocolError, match="exceeds the maximum"):
        FrameDecoder(max_payload=1 << 20).feed_lending(_wire.HEADER.pack(DATA, 1, (1 << 20) + 1))


def test_memory_grows_with_what_arrives_not_with_the_header(small_large: None) -> None:
    decoder = FrameDecoder()
    decoder.feed_lending(_wire.HEADER.pack(DATA, 1, 1000) + b"x" * 10)
    arrived = 10
    while arrived < 990:
        room, _ = decoder.buffers(memoryview(bytearray(4)))
        assert 0 < len(room) <= max(arrived, 8)  # at most doubling what arrived
        size = min(len(room), 10, 990 - arrived)
        room[:size] = b"y" * size
        assert decoder.filled(size, memoryview(bytearray(4))) == []
        arrived += size
    assert decoder.buffered == arrived == 990
    room, spare = decoder.buffers(memoryview(bytearray(4)))
    assert len(room) == 10
    room[:] = b"z" * 10
    spare[:2] = b"\x03\x00"  # the next frame's first bytes, read with it
    ((_, _, view),) = decoder.filled(12, spare)
    assert bytes(view) == b"x" * 10 + b"y" * 980 + b"z" * 10
    assert decoder.buffered == 2


def test_bad_frames_after_a_lent_one_keep_it_in_the_error(small_large: None) -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError) as info:
        decoder.feed_lending(encode_frame(DATA, 1, b"a" * 20) + _wire.HEADER.pack(99, 1, 0))
    assert _as_bytes(info.value.frames) == [(DATA, 1, b"a" * 20)]


def test_values_decoded_from_a_view_keep_nothing_of_it() -> None:
    numpy = pytest.importorskip("numpy")
    values = [
        b"\x01" * 100_000,
        "é" * 50_000,
        [b"ab" * 40_000, "cd", 2**70, 1.5, {"k": (1, frozenset({2}))}],
        numpy.arange(20_000, dtype="<f8"),
    ]
    decoder = FrameDecoder()
    for value in values:
        ((_, _, view),) = decoder.feed_lending(encode_frame(DATA, 1, dumps(value)))
        assert isinstance(view, memoryview)
        got = loads(view)
        view[:] = b"\xff" * len(view)  # the buffer written over
        decoder.feed_lending(b"")  # and given back
        if isinstance(value, numpy.ndarray):
            assert (got == value).all()
            assert got.flags.writeable and got.flags.owndata
        else:
            assert got == value


@pytest.mark.anyio
async def test_large_values_through_a_gateway_arrive_whole() -> None:
    numpy = pytest.importorskip("numpy")
    sizes = [_wire.LARGE_FRAME - 6, _wire.LARGE_FRAME, 1 << 20, 3 << 20 | 7, 9 << 20]
    values: list[object] = [bytes([n % 251]) * n for n in sizes]
    values += ["x" * (2 << 20), numpy.arange(300_000, dtype="<i4"), [b"a" * 70_000] * 3]
    async with asyncgw.Group() as group:
        gateway = await group.makegateway("popen")
        # All sent before any is read back: the worker decodes each large
        # payload before its buffer is reused.
        channel = gateway.remote_exec(
            f"items = [channel.receive() for _ in range({2 * len(values)})]\n"
            "for item in items:\n"
            "    channel.send(item)\n"
        )
        for value in values * 2:
            await channel.send(value)
        for value in values * 2:
            got = await channel.receive()
            if isinstance(value, numpy.ndarray):
                assert (got == value).all()
            else:
                assert got == value
        await channel.waitclose(timeout=30)


def test_dumps_parts_leaves_large_bodies_unjoined() -> None:
    numpy = pytest.importorskip("numpy")
    array = numpy.arange(20_000, dtype="<f8")
    for value in [b"x" * 70_000, "é" * 40_000, (1, [array, None], "tail"), array]:
        parts = _wire.dumps_parts(value)
        assert len(parts) > 1
        assert b"".join(parts) == dumps(value)
    for value in [b"x" * 1000, [b"x" * 70_000] * 65, 12, array[:10]]:  # small, or too many parts
        parts = _wire.dumps_parts(value)
        assert len(parts) == 1 and parts[0] == dumps(value)


@pytest.mark.anyio
@pytest.mark.parametrize("await_", ["", "await "])
async def test_large_values_sent_by_remote_code_are_as_they_were_at_send(await_: str) -> None:
    """The far side writes a large body without copying it first, or copies
    it before waiting for window: an array changed right after ``send``
    arrives as it was (sync remote code, and async)."""
    pytest.importorskip("numpy")
    source = (
        "import numpy\n"
        "array = numpy.zeros(1 << 19)  # 4 MiB: the third waits for window\n"
        "for n in range(6):\n"
        "    array[:] = n\n"
        f"    {await_}channel.send(array)\n"
        "    array[:] = -1\n"
    )
    async with asyncgw.Group() as group:
        gateway = await group.makegateway("popen")
        channel = gateway.remote_exec(source)
        for n in range(6):
            got = await channel.receive()
            assert got.min() == got.max() == n
        await channel.waitclose(timeout=30)
