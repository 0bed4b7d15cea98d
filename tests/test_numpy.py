"""numpy arrays on the wire (issue 20): dtype, shape and raw buffer, no pickle.

Round trips keep dtype (byte order included), shape and values, strided
arrays arrive contiguous, 0-d arrays stay 0-d; dtypes holding objects or
fields are refused before anything is sent; a forged array header (a
dtype off the allowlist, a shape that does not match its byte count) is a
LoadError before numpy builds anything; a far side without numpy runs
everything else and names numpy when an array reaches it.
"""

from __future__ import annotations

import struct
import subprocess

import pytest

import asyncgw
import asyncgw.sync
from asyncgw import DumpError, LoadError, dumps, loads

np = pytest.importorskip("numpy")  # the test extra installs it: a skip here is a setup error

pytestmark = pytest.mark.anyio

#: A worker interpreter without numpy (checked by the test that uses it).
NO_NUMPY_PYTHON = "/root/.pyenv/versions/3.12.1/bin/python"

DTYPES = ["?", "i1", "<i2", ">i4", "<i8", "u1", ">u2", "<u4", ">u8", "<f2", ">f4", "<f8"]
DTYPES += [">f8", "<c8", ">c16", "S3", "<U4", ">U2"]


def same(a, b) -> bool:
    return (
        type(b) is np.ndarray
        and a.dtype.str == b.dtype.str
        and a.shape == b.shape
        and a.tobytes() == b.tobytes()
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 4), (2, 0, 5), (2, 3, 1, 2)])
def test_round_trips_keep_dtype_shape_and_values(dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape))
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype="u1")
    array = raw.view(dtype).reshape(shape) if raw.size else np.zeros(shape, dtype)
    if array.dtype.kind == "b":  # bytes 0 and 1 only, as numpy makes them
        array = (raw % 2).view(dtype).reshape(shape)
    elif array.dtype.kind == "U":  # valid code points only
        code = array.dtype.byteorder.replace("=", "<").replace("|", "<") + "u4"
        array = (raw.view(code) % 0x110000).astype(code).view(dtype).reshape(shape)
    back = loads(dumps({"a": [array]}))["a"][0]
    assert same(array, back)
    assert back.flags.writeable and back.flags.c_contiguous and back.flags.aligned


def test_bools_arrive_as_zero_and_one() -> None:
    # A view can hold a bool byte other than 0 or 1: it arrives as True.
    sent = np.array([0, 1, 2, 255], dtype="u1").view("?")
    back = loads(dumps(sent))
    assert back.view("u1").tolist() == [0, 1, 1, 1]
    assert back.tolist() == [False, True, True, True]


def test_zero_d_array_stays_zero_d() -> None:
    back = loads(dumps(np.array(2.5, dtype=">f8")))
    assert back.shape == () and back.dtype.str == ">f8" and float(back) == 2.5


@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[:, ::2],
        lambda a: a.T,
        lambda a: a[::-1, 1:3],
        lambda a: np.asfortranarray(a),
    ],
)
def test_non_contiguous_arrays_arrive_contiguous_and_equal(view) -> None:
    array = view(np.arange(48, dtype="<i4").reshape(6, 8))
    back = loads(dumps(array))
    assert back.flags.c_contiguous
    assert back.shape == array.shape and (back == array).all()


def test_the_encoding_is_the_raw_buffer() -> None:
    # dtype, shape, byte count and the buffer as it sits in memory: no pickle.
    array = np.arange(3, dtype=">u2")
    data = dumps(array)
    assert data.endswith(b"\x00\x00\x00\x01\x00\x02") and b"pickle" not in data
    assert data.startswith(b"A\x03>u2\x01" + struct.pack("!QQ", 3, 6))


@pytest.mark.parametrize(
    "array",
    [
        np.array([object(), 1], dtype=object),
        np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]),
        np.zeros(2, dtype="M8[s]"),
        np.zeros(2, dtype="V8"),
    ],
    ids=["object", "structured", "datetime", "void"],
)
def test_dtypes_that_do_not_travel_are_refused_clearly(array) -> None:
    with pytest.raises(DumpError, match=r"numpy array at value\[1\].*dtype"):
        dumps([1, array])


def test_object_dtype_is_refused_with_its_name() -> None:
    with pytest.raises(DumpError, match="dtype object holds objects"):
        dumps(np.array([None, 1], dtype=object))


def _forged(dtype: bytes, shape: tuple[int, ...], nbytes: int, body: bytes) -> bytes:
    head = b"A" + bytes((len(dtype),)) + dtype + bytes((len(shape),))
    return head + b"".join(struct.pack("!Q", d) for d in shape) + struct.pack("!Q", nbytes) + body


@pytest.mark.parametrize(
    "data, message",
    [
        (_forged(b"|O8", (1,), 8, b"\0" * 8), "not one that travels"),
        (_forged(b"<V8", (1,), 8, b"\0" * 8), "not one that travels"),
        (_forged(b"<f3", (1,), 3, b"\0" * 3), "not one that travels"),
        (_forged(b"[('a','O')]", (1,), 8, b"\0" * 8), "not a plain numpy dtype"),
        (_forged(b"<f8", (2,), 8, b"\0" * 8), "claims 8 bytes"),
        (_forged(b"<f8", (2**40, 2**40), 0, b""), "claims 0 bytes"),
        (_forged(b"<f8", (4,), 32, b"\0" * 8), "truncated"),
        (_forged(b"<f8", (0, 2**63), 0, b""), "refused"),
        (_forged(b"|S0", (5,), 0, b""), "not one that travels"),
        (_forged(b"<U0", (5,), 0, b""), "not one that travels"),
        (_forged(b"<U1", (1,), 4, b"\xff\xff\xff\xff"), "past U\\+10FFFF"),
        (_forged(b">U1", (1,), 4, b"\x00\x11\x00\x00"), "past U\\+10FFFF"),
    ],
)
def test_forged_arrays_are_load_errors_before_anything_is_built(data: bytes, message: str) -> None:
    with pytest.raises(LoadError, match=message):
        loads(data)


def double(a):
    return a * 2


def shape_of(a):
    return list(a.shape), a.dtype.str


async def test_arrays_through_pool_map() -> None:
    arrays = [np.arange(n, dtype=">f4").reshape(-1, 1)[::2] for n in (0, 1, 10, 1000)]
    async with asyncgw.Pool(2) as pool:
        results = await pool.map(double, arrays)
        shapes = await pool.map(shape_of, arrays)
    for array, result in zip(arrays, results, strict=True):
        assert result.shape == array.shape and (result == array * 2).all()
    assert shapes == [(list(a.shape), ">f4") for a in arrays]  # arrived as sent


def test_arrays_through_the_executor() -> None:
    with asyncgw.sync.Executor(1) as executor:
        results = list(executor.map(double, [np.ones((2, 3), dtype="<i2")] * 5))
    assert all(r.dtype.str == "<i2" and (r == 2).all() for r in results)


def make_array(n):
    import numpy

    return numpy.arange(n, dtype="<u2")


def no_numpy_here(x):
    import sys

    try:
        import numpy  # noqa: F401
    except ImportError:
        return [x, sys.version_info[:2], "no numpy"]
    return [x, sys.version_info[:2], "numpy"]


@pytest.fixture
def without_numpy() -> str:
    """An interpreter that has no numpy (a failed check, not a skip)."""
    probe = subprocess.run([NO_NUMPY_PYTHON, "-c", "import numpy"], capture_output=True)
    assert probe.returncode != 0, f"{NO_NUMPY_PYTHON} has numpy: pick one without"
    return NO_NUMPY_PYTHON


async def test_a_far_side_without_numpy_runs_the_rest_and_names_numpy(without_numpy: str) -> None:
    async with asyncgw.Pool([f"popen//python={without_numpy}"], retries=0) as pool:
        # Everything but arrays works there: the wire never imports numpy itself.
        assert await pool.map(no_numpy_here, [1, 2]) == [
            [1, (3, 12), "no numpy"],
            [2, (3, 12), "no numpy"],
        ]
        # An array sent there is refused there, naming numpy.
        with pytest.raises(asyncgw.GatewayLost, match="numpy is not installed here"):
            await pool.map(double, [np.zeros(3)])
    async with asyncgw.Group([f"popen//python={without_numpy}"]) as group:
        gateway = group[0]
        channel = gateway.remote_exec(
            "try:\n"
            "    channel.receive()\n"
            "except Exception as exc:\n"
            "    channel.send([type(exc).__name__, str(exc)])\n"
        )
        await channel.send(np.arange(4, dtype="<i8"))
        name, text = await channel.receive()
        assert name == "LoadError"
        assert "numpy is not installed here" in text and "<i8" in text
        # ... and the gateway goes on with everything else.
        assert await gateway.remote_exec("channel.send(6 * 7)").receive() == 42


async def test_a_far_side_without_numpy_where_numpy_is_blocked() -> None:
    # The worker's own interpreter has numpy; importing it is made to fail.
    async with asyncgw.Group(["popen"]) as group:
        gateway = group[0]
        channel = gateway.remote_exec(
            "import sys\n"
            "sys.modules['numpy'] = None\n"
            "channel.send('blocked')\n"
            "try:\n"
            "    channel.receive()\n"
            "except Exception as exc:\n"
            "    channel.send([type(exc).__name__, str(exc)])\n"
            "channel.send(channel.receive())\n"
        )
        assert await channel.receive() == "blocked"
        await channel.send([np.zeros((2, 2), dtype=">f8")])
        name, text = await channel.receive()
        assert name == "LoadError" and "numpy" in text and ">f8" in text
        await channel.send({"still": [1, 2.5, b"x"]})
        assert await channel.receive() == {"still": [1, 2.5, b"x"]}
