"""Transport-independent behaviour of gateways and remote code.

Every test here takes the parametrized ``gateway`` fixture, so each runs
over every transport listed in ``conftest.TRANSPORT_SPECS``.
"""

from __future__ import annotations

import contextlib
import os
import sys

import pytest

import asyncgw

pytestmark = pytest.mark.anyio


async def test_remote_exec_source_round_trip(gateway: asyncgw.Gateway) -> None:
    channel = gateway.remote_exec("channel.send(channel.receive() * 2)")
    await channel.send(21)
    assert await channel.receive() == 42
    await channel.waitclose(timeout=10)
    assert channel.isclosed()


async def test_remote_code_runs_as_channelexec(gateway: asyncgw.Gateway) -> None:
    channel = gateway.remote_exec("channel.send(__name__)")
    assert await channel.receive() == "__channelexec__"


async def test_indented_source_is_dedented(gateway: asyncgw.Gateway) -> None:
    channel = gateway.remote_exec(
        """
        x = 1
        channel.send(x + 1)
        """
    )
    assert await channel.receive() == 2


def _double_each(channel, factor=2):  # type: ignore[no-untyped-def]
    for item in channel:
        channel.send(item * factor)


async def test_remote_exec_function_with_kwargs(gateway: asyncgw.Gateway) -> None:
    channel = gateway.remote_exec(_double_each, factor=3)
    for value in range(5):
        await channel.send(value)
        assert await channel.receive() == value * 3
    channel.close()


async def test_remote_exec_module(gateway: asyncgw.Gateway) -> None:
    from . import remote_module

    channel = gateway.remote_exec(remote_module)
    await channel.send("ping")
    assert await channel.receive() == ("pong", "__channelexec__")


async def test_async_remote_code_with_top_level_await(gateway: asyncgw.Gateway) -> None:
    channel = gateway.remote_exec(
        """
        import asyncio
        value = await channel.receive()
        await asyncio.sleep(0)
        await channel.send(value + 1)
        """
    )
    await channel.send(1)
    assert await channel.receive() == 2


async def _async_echo(channel, suffix):  # type: ignore[no-untyped-def]
    async for item in channel:
        await channel.send(item + suffix)


async def test_async_def_function(gateway: asyncgw.Gateway) -> None:
    channel = gateway.remote_exec(_async_echo, suffix="!")
    await channel.send("a")
    assert await channel.receive() == "a!"
    channel.close()


async def test_worker_imports_asyncio_only_for_async_code(gateway: asyncgw.Gateway) -> None:
    probe = "import sys; channel.send('asyncio' in sys.modules)"
    assert await gateway.remote_exec(probe).receive() is False
    await gateway.remote_exec("await channel.send(1)").receive()
    assert await gateway.remote_exec(probe).receive() is True


async def test_remote_exception_carries_traceback(gateway: asyncgw.Gateway) -> None:
    channel = gateway.remote_exec(
        """
        channel.send("before")
        def inner():
            raise KeyError("boom")
        inner()
        """
    )
    assert await channel.receive() == "before"
    with pytest.raises(asyncgw.RemoteError) as info:
        await channel.receive()
    assert "KeyError: 'boom'" in info.value.formatted
    assert "in inner" in info.value.formatted
    assert 'raise KeyError("boom")' in info.value.formatted  # the remote source line
    with pytest.raises(asyncgw.RemoteError):
        await channel.waitclose(timeout=5)


async def test_syntax_error_is_a_remote_error(gateway: asyncgw.Gateway) -> None:
    with pytest.raises(asyncgw.RemoteError, match="SyntaxError"):
        await gateway.remote_exec("def (:").receive()


async def test_print_and_input_do_not_corrupt_the_stream(
    gateway: asyncgw.Gateway, capfd: pytest.CaptureFixture[str]
) -> None:
    channel = gateway.remote_exec(
        """
        import os, sys
        print("to stdout " * 100)
        os.write(1, b"raw fd 1 write\\n")
        sys.stdout.flush()
        channel.send(sys.stdin.read())
        channel.send("still framed")
        """
    )
    assert await channel.receive() == ""
    assert await channel.receive() == "still framed"
    await channel.waitclose(timeout=5)


async def test_call_returns_result(gateway: asyncgw.Gateway) -> None:
    def add(a, b, *, scale=1):  # type: ignore[no-untyped-def]
        return (a + b) * scale

    assert await gateway.call(add, 1, 2, scale=10) == 30


async def test_call_async_function_and_error(gateway: asyncgw.Gateway) -> None:
    async def fail(message):  # type: ignore[no-untyped-def]
        raise ValueError(message)

    with pytest.raises(asyncgw.RemoteError, match="ValueError: nope"):
        await gateway.call(fail, "nope")


async def test_remote_status_and_info(gateway: asyncgw.Gateway) -> None:
    status = await gateway.remote_status()
    assert status.numexecuting == 0
    assert status.execmodel == "thread"
    channel = gateway.remote_exec("channel.receive()")
    status = await gateway.remote_status()
    assert status.numexecuting == 1
    assert status.numchannels >= 1
    await channel.send(None)
    await channel.waitclose(timeout=5)
    info = await gateway.remote_info()
    assert info.pid == gateway.remote_pid
    assert tuple(info.version_info[:2]) >= (3, 9)
    assert info.platform == sys.platform
    assert os.path.isabs(info.cwd) and os.path.isabs(info.executable)


async def test_code_whose_close_arrived_is_no_longer_counted_as_executing(
    gateway: asyncgw.Gateway,
) -> None:
    """The close a caller waits for comes after the worker stopped counting
    the code as executing (execnet's test_gateway_status_simple relies on
    it): never a status that still counts finished code."""
    counts = []
    for _ in range(200):
        channel = gateway.remote_exec("pass")
        await channel.waitclose(timeout=5)
        counts.append((await gateway.remote_status()).numexecuting)
    assert counts == [0] * 200


async def test_every_value_type_travels_both_ways(gateway: asyncgw.Gateway) -> None:
    values = [
        None, True, False, 0, -1, 2**70, -(2**200), 1.5, float("inf"), 1 + 2j, "", "héllo",
        b"\x00\xff", [1, [2]], (1, (2,)), {"a": {1: (2, 3)}}, {1, 2}, frozenset({"x"}),
    ]  # fmt: skip
    channel = gateway.remote_exec("for item in channel: channel.send((type(item).__name__, item))")
    for value in values:
        await channel.send(value)
        assert await channel.receive() == (type(value).__name__, value)
    channel.close()


async def test_unsupported_type_fails_at_send_naming_it(gateway: asyncgw.Gateway) -> None:
    channel = gateway.remote_exec("channel.send(channel.receive())")
    with pytest.raises(asyncgw.DumpError, match=r"builtins.object at value\[1\]\['k'\]"):
        await channel.send([1, {"k": object()}])
    await channel.send("the channel still works")
    assert await channel.receive() == "the channel still works"


async def test_channels_travel_as_values(gateway: asyncgw.Gateway) -> None:
    side = gateway.newchannel()
    channel = gateway.remote_exec(
        """
        other = channel.receive()
        other.send("via the side channel")
        reply = channel.gateway.newchannel()
        channel.send(reply)
        reply.send("on a channel made remotely")
        """
    )
    await channel.send(side)
    assert await side.receive() == "via the side channel"
    reply = await channel.receive()
    assert isinstance(reply, asyncgw.Channel)
    assert await reply.receive() == "on a channel made remotely"


async def test_async_iteration_ends_at_close(gateway: asyncgw.Gateway) -> None:
    items = [item async for item in gateway.remote_exec("for i in range(5): channel.send(i)")]
    assert items == [0, 1, 2, 3, 4]


async def test_receive_after_end_raises_channel_closed(gateway: asyncgw.Gateway) -> None:
    channel = gateway.remote_exec("channel.send(1)")
    assert await channel.receive() == 1
    with pytest.raises(asyncgw.ChannelClosed):
        await channel.receive()
    with pytest.raises(EOFError):  # execnet's contract
        await channel.receive()
    with pytest.raises(asyncgw.ChannelIOError):
        await channel.send(2)
    with pytest.raises(OSError):  # execnet's contract
        await channel.send(2)


async def test_receive_timeout(gateway: asyncgw.Gateway) -> None:
    channel = gateway.remote_exec("channel.receive(); channel.send('late')")
    with pytest.raises(asyncgw.TimeoutError):
        await channel.receive(timeout=0.05)
    with pytest.raises(TimeoutError):  # also the builtin
        await channel.receive(timeout=0.01)
    await channel.send("go")
    assert await channel.receive(timeout=10) == "late"


async def test_local_close_reaches_remote_as_eof(gateway: asyncgw.Gateway) -> None:
    channel = gateway.remote_exec(
        """
        side = channel.receive()
        try:
            side.receive()
        except EOFError:
            channel.send("eof")
        """
    )
    side = gateway.newchannel()
    await channel.send(side)
    side.close()
    assert await channel.receive() == "eof"


async def test_local_close_with_error_is_remote_error_remotely(gateway: asyncgw.Gateway) -> None:
    channel = gateway.remote_exec(
        """
        side = channel.receive()
        try:
            side.receive()
        except side.RemoteError as exc:
            channel.send(str(exc))
        """
    )
    side = gateway.newchannel()
    await channel.send(side)
    side.close("local trouble")
    assert await channel.receive() == "local trouble"


async def test_setcallback_and_endmarker(gateway: asyncgw.Gateway) -> None:
    received: list[object] = []
    channel = gateway.remote_exec("for i in range(100): channel.send(i)")
    channel.setcallback(received.append, endmarker="END")
    await channel.waitclose(timeout=10)
    assert received == [*range(100), "END"]


async def test_many_channels_interleaved(gateway: asyncgw.Gateway) -> None:
    channels = [gateway.remote_exec("for x in channel: channel.send(x + 1)") for _ in range(50)]
    for round_ in range(3):
        for index, channel in enumerate(channels):
            await channel.send(index * 10 + round_)
        for index, channel in enumerate(channels):
            assert await channel.receive() == index * 10 + round_ + 1
    for channel in channels:
        channel.close()


async def test_large_values_both_ways(gateway: asyncgw.Gateway) -> None:
    blob = os.urandom(3 * 1024 * 1024 + 7)
    channel = gateway.remote_exec("for x in channel: channel.send(x[::-1])")
    for _ in range(3):
        await channel.send(blob)
        assert await channel.receive() == blob[::-1]
    channel.close()


async def test_many_small_messages_remote_to_local(gateway: asyncgw.Gateway) -> None:
    count = 20000
    channel = gateway.remote_exec(f"for i in range({count}): channel.send(i)")
    total = 0
    async for item in channel:
        total += item
    assert total == count * (count - 1) // 2


async def test_gateway_repr_and_liveness(gateway: asyncgw.Gateway) -> None:
    assert gateway.is_alive
    assert repr(gateway) == (
        f"<Gateway id={gateway.id!r} receive-live, thread model, 0 active channels>"
    )


async def test_timed_out_receives_lose_no_value(gateway: asyncgw.Gateway) -> None:
    count = 3000
    channel = gateway.remote_exec(f"for i in range({count}): channel.send(i)")
    received: list[int] = []
    while len(received) < count:  # many receives time out just as a value lands
        with contextlib.suppress(asyncgw.TimeoutError):
            received.append(await channel.receive(timeout=0.0001))
    assert received == list(range(count))
