"""The codec's fast path for flat tuples and lists (``_dump_flat``,
``_load_flat``): the same bytes as the general encoder, the same values as
the general decoder, and every malformed payload still a ``LoadError``."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncgw import _wire
from asyncgw._wire import LARGE_FRAME, LoadError, dumps, dumps_parts, loads

from .test_wire import assert_every_truncation_fails

flat_items = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 0, -1, 1, True, False])
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
flat_values = st.lists(flat_items, max_size=20) | st.lists(flat_items, max_size=20).map(tuple)


def general_dumps(value: object) -> bytes:
    """The general encoder's bytes, without the fast path."""
    return b"".join(_wire._dump_parts(value, None))


def general_loads(data: bytes) -> object:
    value, pos = _wire._decode(data, 0, None, 0)
    assert pos == len(data)
    return value


def same(a: object, b: object) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    return a == b


@settings(max_examples=400)
@given(flat_values)
def test_flat_values_encode_as_the_general_encoder_does(value: object) -> None:
    data = dumps(value)
    assert data == general_dumps(value)
    assert dumps_parts(value) == [data]
    back = loads(data)
    assert same(back, value)
    assert same(back, general_loads(data))
    assert same(loads(memoryview(data)), value)  # a lent payload


EDGES: list[object] = [
    (),
    [],
    (12345, 7, "add", 1),  # an object request
    (12345, 101),  # its reply
    (2**63 - 1, -(2**63)),  # the ends of an i
    (2**63,),  # one past: an I, by the general encoder
    [-(2**63) - 1, 5],
    [10**100, "x"],
    (True, False, 1, 0),  # bools stay bools, ints ints
    [1, True],
    ("", "é", "\U0001f600", "\ud800", "a" * 1000),  # unicode, a lone surrogate
    (None, 1.5, -0.0, float("inf"), float("-inf")),
    (1, (2, 3)),  # nested: the general path
    [1, [2]],
    ("a", {"b": 1}),
    [b"bytes"],
    (1, 2 + 3j),
    tuple(range(16)),  # the longest run decoded in one unpack
    tuple(range(17)),
    list(range(-50, 50)),
]


@pytest.mark.parametrize("value", EDGES, ids=repr)
def test_edges_round_trip_with_their_types(value: object) -> None:
    data = dumps(value)
    assert data == general_dumps(value)
    back = loads(data)
    assert same(back, value)
    assert type(back) is type(value)


def test_nan_and_int_subclasses() -> None:
    back = loads(dumps((float("nan"), 1)))
    assert back[0] != back[0] and back[1] == 1

    class MyInt(int):
        pass

    class MyStr(str):
        pass

    for value in ([MyInt(1)], (1, MyStr("x"))):
        with pytest.raises(_wire.DumpError):
            dumps(value)
        with pytest.raises(_wire.DumpError):
            dumps_parts(value)


def test_a_large_str_item_is_kept_apart_by_dumps_parts() -> None:
    value = (1, "x" * LARGE_FRAME)
    parts = dumps_parts(value)
    assert len(parts) > 1  # its body not copied into one payload
    assert b"".join(parts) == dumps(value) == general_dumps(value)
    assert loads(dumps(value)) == value


def head(tag: bytes, n: int) -> bytes:
    return tag + struct.pack("!I", n)


def i(value: int) -> bytes:
    return b"i" + struct.pack("!q", value)


def s(text: bytes, n: int | None = None) -> bytes:
    return b"s" + struct.pack("!I", len(text) if n is None else n) + text


MALFORMED = [
    head(b"t", 2) + i(1),  # fewer items than claimed
    head(b"t", 1) + i(1) + i(2),  # trailing bytes after a run of ints
    head(b"t", 3) + i(1) + i(2),  # an int run whose count is wrong
    head(b"l", 1) + i(1) + i(2),
    head(b"t", 2) + i(1) + i(2)[:-1],  # a truncated int
    head(b"t", 1) + s(b"abc", 4),  # a str past the end
    head(b"t", 2) + s(b"abc", 4) + b"N",  # a str that swallows the next item
    head(b"t", 1) + s(b"\xff\xfe"),  # invalid UTF-8
    head(b"t", 1) + b"f" + b"\x00" * 7,  # a truncated float
    head(b"t", 2**32 - 1) + b"N",  # a count far beyond the data
    head(b"t", 1) + b"?",  # an unknown tag
    head(b"t", 1) + b"N" + b"N",  # trailing
    head(b"l", 1)[:3],  # a truncated head
    b"t",
    b"l",
]


@pytest.mark.parametrize("data", MALFORMED, ids=repr)
def test_malformed_flat_payloads_are_load_errors(data: bytes) -> None:
    with pytest.raises(LoadError):
        loads(data)
    with pytest.raises(LoadError):
        loads(memoryview(data))


@settings(max_examples=200, deadline=None)
@given(flat_values)
def test_every_truncation_of_a_flat_value_is_a_load_error(value: object) -> None:
    assert_every_truncation_fails(value)


@settings(max_examples=300)
@given(st.lists(st.sampled_from([b"i", b"s", b"N", b"T", b"F", b"f", b"t", b"\x00"]), max_size=6),
       st.binary(max_size=40), st.sampled_from([b"t", b"l"]), st.integers(0, 8))  # fmt: skip
def test_flat_looking_garbage_decodes_as_the_general_decoder_does(
    tags: list[bytes], body: bytes, tag: bytes, count: int
) -> None:
    data = head(tag, count) + b"".join(t + body[: len(body) // 3] for t in tags)
    try:
        expected = general_loads(data)
    except (LoadError, struct.error, IndexError, UnicodeDecodeError, AssertionError, TypeError):
        with pytest.raises(LoadError):
            loads(data)
    else:
        assert same(loads(data), expected)
