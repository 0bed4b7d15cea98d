"""A thread of the blocking facade waiting for a value reads the worker's
pipe itself (``Router.read_for_thread``): values come in order, frames that
are the loop's (callbacks, closes, channels inside values) still reach it in
order, and an end or a protocol error read by the thread loses the gateway
as the loop would."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

import asyncgw
import asyncgw._channel as core_channel
import asyncgw.sync as execnet

from .fakeworker import SKIP_BOOTSTRAP

ECHO = "for x in channel: channel.send(x)"


@pytest.fixture
def group() -> execnet.Group:
    with execnet.Group() as group:
        yield group


def _threads_taking(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> list[int]:
    """Patch ``cls.name`` (a taker: True when it took the value) to record
    the thread of each call that took one."""
    takers: list[int] = []
    take = getattr(cls, name)

    def counting(self: object, value: object) -> bool:
        taken: bool = take(self, value)
        if taken:
            takers.append(threading.get_ident())
        return taken

    monkeypatch.setattr(cls, name, counting)
    return takers


def _echo_read_by_this_thread(group: execnet.Group) -> tuple[execnet.Gateway, execnet.Channel]:
    """A popen gateway running an echo, after 20 round trips: this thread
    reads its pipe, and the loop's reader is parked."""
    gw = group.makegateway("popen")
    channel = gw.remote_exec(ECHO)
    for i in range(20):
        channel.send(i)
        assert channel.receive(timeout=10) == i
    return gw, channel


def _reader_of(gw: execnet.Gateway):  # type: ignore[no-untyped-def]
    reader = gw._gateway._router._thread_reader
    assert reader is not None, "a popen gateway's pipe can be read by a thread"
    return reader


def test_a_waiting_thread_reads_the_pipe_itself(
    group: execnet.Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivered_by = _threads_taking(monkeypatch, core_channel.Channel, "_deliver_in_thread")
    gw = group.makegateway("popen")
    channel = gw.remote_exec(ECHO)
    for i in range(200):
        channel.send(i)
        assert channel.receive(timeout=10) == i
    # A few may go through the loop (before it parks, or after a pause on
    # a loaded machine); nearly all are read by this thread.
    assert delivered_by.count(threading.get_ident()) >= 160
    assert set(delivered_by) == {threading.get_ident()}
    channel.close()


def test_other_channels_and_closes_keep_their_order_while_a_thread_reads(
    group: execnet.Group,
) -> None:
    gw = group.makegateway("popen")
    seen: list[object] = []
    done = threading.Event()

    def on_value(item: object) -> None:
        seen.append(item)
        if item == "end":
            done.set()

    side = gw.newchannel()
    side.setcallback(on_value)
    channel = gw.remote_exec(
        """
        side = channel.receive()
        for i in range(300):
            channel.send(i)
            side.send(i)
            if i % 100 == 50:
                channel.send(b"x" * 300000)  # lent: read into the decoder's buffer
                inner = channel.gateway.newchannel()
                channel.send(inner)  # a channel inside a value: the loop's to decode
                inner.send("inner")
                inner.close()
        side.send("end")
        channel.send("last")
        """
    )
    channel.send(side)
    got: list[object] = []
    inners: list[object] = []
    while True:
        item = channel.receive(timeout=30)
        if isinstance(item, execnet.Channel):
            inners.append(item.receive(timeout=30))
            continue
        got.append(item)
        if item == "last":
            break
    numbers = [x for x in got if isinstance(x, int)]
    assert numbers == list(range(300))
    assert [x for x in got if isinstance(x, bytes)] == [b"x" * 300_000] * 3
    assert inners == ["inner"] * 3
    assert done.wait(30)
    assert seen == [*range(300), "end"]
    with pytest.raises(EOFError):
        channel.receive(timeout=30)  # the close after "last"


def test_a_timeout_gives_the_reading_back_to_the_loop(group: execnet.Group) -> None:
    gw, channel = _echo_read_by_this_thread(group)
    with pytest.raises(execnet.TimeoutError):
        channel.receive(timeout=0.05)
    reader = _reader_of(gw)
    deadline = time.monotonic() + 10
    while reader._parked:  # no thread reads: the loop's tick takes it back
        assert time.monotonic() < deadline, "the loop never read again"
        time.sleep(0.01)
    # And the loop delivers to a callback with nobody reading for it.
    received = threading.Event()
    side = gw.newchannel()
    side.setcallback(lambda item: received.set())
    gw.remote_exec("channel.receive().send(1)").send(side)
    assert received.wait(10)


def test_a_worker_killed_while_a_thread_reads_loses_the_gateway(group: execnet.Group) -> None:
    gw, channel = _echo_read_by_this_thread(group)
    result: list[BaseException] = []

    def wait() -> None:
        try:
            channel.receive()
        except BaseException as exc:
            result.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    deadline = time.monotonic() + 10
    while not _reader_of(gw).duty.locked():  # the thread is polling the pipe
        assert time.monotonic() < deadline
        time.sleep(0.001)
    os.kill(gw._gateway.remote_pid, signal.SIGKILL)
    waiter.join(30)
    assert not waiter.is_alive()
    assert len(result) == 1 and isinstance(result[0], asyncgw.GatewayLost), result


def test_protocol_garbage_read_by_a_thread_loses_the_gateway(tmp_path: Path) -> None:
    fake = tmp_path / "garbage-worker"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys, os\n"
        "from asyncgw import _wire\n"
        "hello = _wire.dumps({'protocol': _wire.PROTOCOL_VERSION, 'pid': os.getpid()})\n"
        "out, inp = sys.stdout.buffer, sys.stdin.buffer\n"
        "out.write(_wire.MAGIC + _wire.encode_frame(_wire.HELLO, 0, hello))\n"
        "out.flush()\n" + SKIP_BOOTSTRAP + "decoder = _wire.FrameDecoder()\n"
        "echoed = 0\n"
        "while echoed < 20:  # echo 20 values, so that a thread reads the pipe\n"
        "    for kind, ident, payload in decoder.feed(inp.read1(65536)):\n"
        "        if kind == _wire.DATA:\n"
        "            out.write(_wire.encode_frame(_wire.DATA, ident, payload))\n"
        "            out.flush()\n"
        "            echoed += 1\n"
        "inp.read1(65536)  # the 21st value\n"
        "out.write(b'\\xff' * 20)  # not a frame\n"
        "out.flush()\n"
        "inp.read()  # until end of input\n"
    )
    fake.chmod(0o755)
    with execnet.Group() as group:
        gw = group.makegateway(f"popen//python={fake}")
        channel = gw.remote_exec("pass")
        for i in range(20):
            channel.send(i)
            assert channel.receive(timeout=10) == i
        channel.send(20)
        with pytest.raises(asyncgw.GatewayLost, match="unknown message type 255"):
            channel.receive(timeout=10)
        # The thread read it (and left the reading to the loop for good).
        assert gw._gateway._router._thread_reader is None


def test_a_blocking_object_call_reads_its_own_reply(
    group: execnet.Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncgw.objects import proxy as proxy_module

    settled_by = _threads_taking(monkeypatch, proxy_module.ObjectService, "_reply_in_thread")
    gw = group.makegateway("popen")
    counter = gw.create("collections:Counter")
    add = counter.update
    for _i in range(200):
        add(a=1)
    assert counter.most_common() == [("a", 200)]  # a plain value, read here too
    other = gw.create("collections:Counter", "bb")  # a reference: the loop makes its proxy
    assert other.most_common() == [("b", 2)]
    assert settled_by.count(threading.get_ident()) >= 160
    assert set(settled_by) == {threading.get_ident()}


def test_a_long_wait_wakes_the_loop_rarely(
    group: execnet.Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncgw.transports import pipereader

    ticks: list[float] = []
    tick = pipereader.PipeReader._tick

    def counting(self: pipereader.PipeReader) -> None:
        ticks.append(time.monotonic())
        tick(self)

    monkeypatch.setattr(pipereader.PipeReader, "_tick", counting)
    gw = group.makegateway("popen")
    channel = gw.remote_exec("import time; x = channel.receive(); time.sleep(1.5); channel.send(x)")
    channel.send(1)
    started = time.monotonic()
    assert channel.receive(timeout=30) == 1
    waited = time.monotonic() - started
    # Every 2 ms at first, then less and less often (TICK_MAX) while the
    # same thread waits: ~750 ticks without the back-off.
    assert waited >= 1.4
    assert len(ticks) < 40, len(ticks)
