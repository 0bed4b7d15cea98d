"""Remote objects under hostile values: a result the wire cannot carry, an
exception that cannot be described, a generator that raises mid-stream, a
released proxy. Each is an error on that one call; the object service,
and every other proxy on its gateway, go on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import asyncgw
import asyncgw.sync
from asyncgw.objects.proxy import BATCH, object_service

pytestmark = pytest.mark.anyio

#: The gateway's max_frame in these tests: small, so that a value over it is cheap.
MAX_FRAME = 64 * 1024
#: Long enough for any reply on a loaded machine; a hang fails instead of blocking.
PATIENCE = 60


class Hostile:
    """Shipped as source: self-contained."""

    def __init__(self) -> None:
        self.calls = 0

    def ping(self) -> int:
        self.calls += 1
        return self.calls

    def blob(self, size: int) -> bytes:
        return bytes(size)

    def blobs(self, size: int, count: int):  # type: ignore[no-untyped-def]
        for _ in range(count):
            yield bytes(size)

    def raise_bad(self, kind: str) -> None:
        class Bad(Exception):
            def __str__(self) -> str:
                if kind == "str-raises":
                    raise RuntimeError("no str for you")
                if kind == "str-not-str":
                    return 42  # type: ignore[return-value]
                if kind == "str-exits":
                    raise SystemExit(3)
                if kind == "huge":
                    return "x" * (1 << 20)
                return "fine"

            def __repr__(self) -> str:
                raise RuntimeError("no repr either")

        raise Bad()

    def fail_after(self, n: int):  # type: ignore[no-untyped-def]
        yield from range(n)
        raise KeyError(f"after {n}")

    async def afail_after(self, n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield i
        raise KeyError(f"after {n}")


@pytest.fixture
async def gw() -> AsyncIterator[asyncgw.Gateway]:
    async with asyncgw.Group() as group:
        yield await group.makegateway(f"popen//max_frame={MAX_FRAME}")


async def _alive(gw: asyncgw.Gateway, *proxies: object) -> None:
    """Every proxy still answers, and the gateway is up."""
    async with asyncio.timeout(PATIENCE):
        for proxy in proxies:
            assert await proxy.ping() > 0  # type: ignore[attr-defined]
        assert gw.is_alive


async def test_a_result_over_max_frame_is_that_calls_error(gw: asyncgw.Gateway) -> None:
    obj = await gw.create(Hostile)
    async with asyncio.timeout(PATIENCE):
        with pytest.raises(asyncgw.RemoteError) as info:
            await obj.blob(2 * MAX_FRAME)
    assert info.value.typename == "DumpError"
    assert "max_frame" in str(info.value)
    assert await obj.blob(10) == bytes(10)  # the same call, small enough
    await _alive(gw, obj)


async def test_a_batch_over_max_frame_is_that_iterations_error(gw: asyncgw.Gateway) -> None:
    obj = await gw.create(Hostile)
    async with asyncio.timeout(PATIENCE):
        with pytest.raises(asyncgw.RemoteError, match="max_frame"):
            async for _ in await obj.blobs(MAX_FRAME // 4, 8):
                pass
    await _alive(gw, obj)


@pytest.mark.parametrize("kind", ["str-raises", "str-not-str", "str-exits", "huge"])
async def test_an_exception_that_cannot_be_described_is_that_calls_error(
    gw: asyncgw.Gateway, kind: str
) -> None:
    obj = await gw.create(Hostile)
    other = await gw.create(Hostile)
    async with asyncio.timeout(PATIENCE):
        with pytest.raises(asyncgw.RemoteError) as info:
            await obj.raise_bad(kind)
    assert info.value.typename == "Bad"
    assert "raise Bad()" in info.value.formatted  # the traceback, whatever str() did
    assert len(info.value.formatted) < MAX_FRAME
    await _alive(gw, obj, other)


@pytest.mark.parametrize("count", [3, BATCH + 7])
@pytest.mark.parametrize("method", ["fail_after", "afail_after"])
async def test_a_generator_that_raises_delivers_every_item_first(
    gw: asyncgw.Gateway, method: str, count: int
) -> None:
    obj = await gw.create(Hostile)
    items: list[int] = []
    async with asyncio.timeout(PATIENCE):
        with pytest.raises(asyncgw.RemoteError) as info:
            async for item in await getattr(obj, method)(count):
                items.append(item)  # noqa: PERF401 (kept up to the error)
    assert items == list(range(count))
    assert info.value.typename == "KeyError"
    assert f"after {count}" in str(info.value)
    await _alive(gw, obj)


def test_a_blocking_generator_that_raises_delivers_every_item_first() -> None:
    group = asyncgw.sync.Group(["popen"])
    try:
        obj = group[0].create(Hostile)
        items: list[int] = []
        with pytest.raises(asyncgw.RemoteError, match="after 5"):
            for item in obj.fail_after(5):
                items.append(item)  # noqa: PERF402 (kept up to the error)
        assert items == list(range(5))
        assert obj.ping() == 1
    finally:
        group.terminate(timeout=5)


async def test_a_released_proxy_is_a_named_error(gw: asyncgw.Gateway) -> None:
    obj = await gw.create(Hostile)
    holder = await gw.create(Hostile)
    await obj.close()
    with pytest.raises(ReferenceError, match="closed"):
        await obj.ping()
    with pytest.raises(ReferenceError, match="closed"):
        await obj.calls
    with pytest.raises(ReferenceError, match="closed"):
        await holder.ping(obj)  # as an argument
    # An id the far side does not hold, however it got there: named too.
    service = object_service(gw)
    with pytest.raises(asyncgw.RemoteError, match="released") as info:
        await service.request("call", (10**6, "ping", []))
    assert info.value.typename == "ReferenceError"
    with pytest.raises(asyncgw.RemoteError, match="released"):
        await service.request("eval", (10**6, [["getattr", "calls"]]))
    await _alive(gw, holder)


def test_a_released_blocking_proxy_is_a_named_error() -> None:
    group = asyncgw.sync.Group(["popen"])
    try:
        obj = group[0].create(Hostile)
        obj.close()
        with pytest.raises(ReferenceError, match="closed"):
            obj.ping()
        with pytest.raises(ReferenceError, match="closed"):
            asyncgw.sync.fetch(obj.calls)
    finally:
        group.terminate(timeout=5)


@pytest.mark.parametrize(
    "reply",
    [
        ("r", "7", "Counter"),  # a reference whose id is not an int
        ("r", 7, b"Counter"),  # nor its type name a str
        ("x", 7, "Counter"),  # an unknown kind of reference
        ("err", "Name"),  # an error of no known shape
        (),  # only the request's id
    ],
)
async def test_a_malformed_reply_fails_the_waiting_call_and_is_never_used(
    gw: asyncgw.Gateway, reply: tuple[object, ...]
) -> None:
    """A reply of no known shape, as a far side gone wrong could send: the
    call waiting for it fails (the service ends, with what was wrong);
    nothing is made from it, and a new proxy works on a new service."""
    obj = await gw.create(Hostile)
    service = object_service(gw)
    rid = 10**9
    waiting: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    service._pending[rid] = waiting
    service.channel._run_callback((rid, *reply))  # as the channel delivers a value
    async with asyncio.timeout(PATIENCE):
        with pytest.raises(asyncgw.RemoteError, match=r"malformed|unknown"):
            await waiting
        with pytest.raises((asyncgw.RemoteError, asyncgw.GatewayLost)):
            await obj.ping()  # its service ended
    assert service.dead is not None
    await _alive(gw, await gw.create(Hostile))
