"""The sans-IO wire: no subprocess, only bytes in and values or frames out."""

from __future__ import annotations

import contextlib
import itertools
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncgw import _wire
from asyncgw._wire import DumpError, FrameDecoder, LoadError, ProtocolError, dumps, loads

from .conftest import require_python

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 0, -1])
    | st.floats(allow_nan=False)
    | st.complex_numbers(allow_nan=False)
    | st.text()
    | st.binary()
)
hashables = st.recursive(
    scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=4), max_leaves=8
)
values = st.recursive(
    scalars | hashables,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(hashables, inner, max_size=5)
        | st.sets(hashables, max_size=5)
        | st.frozensets(hashables, max_size=5)
    ),
    max_leaves=25,
)


def same(a: object, b: object) -> bool:
    """Equal, with the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())  # type: ignore[attr-defined, index]
    return a == b


@settings(max_examples=300)
@given(values)
def test_values_round_trip_with_their_types(value: object) -> None:
    assert same(loads(dumps(value)), value)


def test_special_values() -> None:
    assert math.isnan(loads(dumps(float("nan"))))
    assert loads(dumps(float("-inf"))) == float("-inf")
    assert str(loads(dumps(-0.0))) == "-0.0"
    assert loads(dumps("\ud800")) == "\ud800"  # lone surrogates survive
    assert loads(dumps(True)) is True and type(loads(dumps(1))) is int
    assert loads(dumps(10**1000)) == 10**1000


class FakeChannel:
    def __init__(self, ident: int) -> None:
        self.id = ident


def test_channels_travel_by_id() -> None:
    data = dumps([FakeChannel(7), {"c": FakeChannel(9)}], channel_id=lambda c: c.id)
    back = loads(data, make_channel=FakeChannel)
    assert [back[0].id, back[1]["c"].id] == [7, 9]
    with pytest.raises(LoadError, match="channel arrived"):
        loads(data)


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (object(), r"builtins\.object at value:"),
        ([1, {"k": object()}], r"builtins\.object at value\[1\]\['k'\]"),
        ((1, 2, [3, bytearray()]), r"builtins\.bytearray at value\[2\]\[1\]"),
        ({"s": {FakeChannel(1)}}, r"value\['s'\]\{item\}"),
    ],
)
def test_dump_error_names_type_and_place(value: object, where: str) -> None:
    with pytest.raises(DumpError, match=where):
        dumps(value)


def test_dump_error_for_subclasses_recursion_and_depth() -> None:
    class MyInt(int):
        pass

    with pytest.raises(DumpError, match="MyInt"):
        dumps(MyInt(3))
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(DumpError, match="nested deeper"):
        dumps(loop)
    deep: list[object] = []
    for _ in range(_wire.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(DumpError, match="nested deeper"):
        dumps(deep)
    assert issubclass(DumpError, TypeError)


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_garbage_only_ever_raises_load_error(data: bytes) -> None:
    with contextlib.suppress(LoadError):  # anything else fails the test
        loads(data)


@settings(max_examples=100, deadline=None)  # every truncation: slow on a loaded machine
@given(values)
def test_every_truncation_is_a_load_error(value: object) -> None:
    assert_every_truncation_fails(value)


def assert_every_truncation_fails(value: object) -> None:
    """Every prefix of ``value``'s encoding, and it with a byte more, is a LoadError."""
    data = dumps(value)
    for cut in range(len(data)):
        with pytest.raises(LoadError):
            loads(data[:cut])
    with pytest.raises(LoadError, match="trailing"):
        loads(data + b"N")


def test_malformed_values() -> None:
    with pytest.raises(LoadError, match="UTF-8"):
        loads(b"s\x00\x00\x00\x02\xff\xfe")
    with pytest.raises(LoadError, match="invalid value"):
        loads(b"d\x00\x00\x00\x01l\x00\x00\x00\x00N")  # a list as a dict key
    with pytest.raises(LoadError, match="unknown value tag"):
        loads(b"Q")
    with pytest.raises(LoadError, match="more than the data holds"):
        loads(b"l\xff\xff\xff\xff")  # claims 4 billion items: refused before allocating
    with pytest.raises(LoadError, match="truncated"):
        loads(b"b\x7f\xff\xff\xff" + b"x" * 10)
    deep = b"l\x00\x00\x00\x01" * (_wire.MAX_DEPTH + 1) + b"N"
    with pytest.raises(LoadError, match="nested deeper"):
        loads(deep)


frames = st.lists(
    st.tuples(
        st.sampled_from(sorted(_wire.MESSAGE_NAMES)),
        st.integers(min_value=0, max_value=2**32 - 1),
        st.binary(max_size=300) | st.just(b"z" * 70_000),
    ),
    max_size=12,
)


@settings(max_examples=200)
@given(frames, st.lists(st.integers(min_value=0, max_value=80_000), max_size=12))
def test_frames_survive_any_split(frames: list[tuple[int, int, bytes]], cuts: list[int]) -> None:
    stream = b"".join(_wire.encode_frame(*frame) for frame in frames)
    points = sorted({min(cut, len(stream)) for cut in cuts} | {0, len(stream)})
    decoder = FrameDecoder()
    got: list[tuple[int, int, bytes]] = []
    for start, stop in itertools.pairwise(points):
        got += decoder.feed(stream[start:stop])
    assert got == frames
    assert decoder.buffered == 0


def test_frame_decoder_byte_by_byte_and_buffered() -> None:
    stream = _wire.encode_frame(_wire.DATA, 3, b"abc") * 2
    decoder = FrameDecoder()
    got = []
    for index in range(len(stream)):
        got += decoder.feed(stream[index : index + 1])
        if index == 4:
            assert decoder.buffered == 5
    assert got == [(_wire.DATA, 3, b"abc")] * 2


def test_bad_headers_are_refused_before_the_payload() -> None:
    with pytest.raises(ProtocolError, match="unknown message type 99"):
        FrameDecoder().feed(_wire.HEADER.pack(99, 1, 0))
    decoder = FrameDecoder(max_payload=1024)
    with pytest.raises(ProtocolError, match="exceeds the maximum of 1024"):
        decoder.feed(_wire.HEADER.pack(_wire.DATA, 1, 2**31))  # only the header was sent


def test_ack_payloads() -> None:
    assert _wire.decode_ack(_wire.encode_ack(2**40)) == 2**40
    with pytest.raises(ProtocolError):
        _wire.decode_ack(b"\x00")


def test_wire_is_stdlib_only_and_python39_syntax() -> None:
    source = Path(_wire.__file__).read_text()
    imports = {
        line.split()[1]
        for line in source.splitlines()
        if line.startswith(("import ", "from ")) and not line.startswith("from __future__")
    }
    assert imports <= {"struct", "typing"}, imports
    python39 = require_python("3.9")  # skips, or fails in CI, where no 3.9 is found
    package = Path(_wire.__file__).parent
    for module in [package / "_wire.py", *sorted((package / "remote").glob("*.py"))]:
        path = str(module)
        subprocess.run(
            [python39, "-I", "-c", f"compile(open({path!r}).read(), {path!r}, 'exec')"],
            check=True,
            timeout=30,
        )
    assert sys.version_info >= (3, 11)
