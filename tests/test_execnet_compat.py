"""asyncgw.sync as execnet 2.1 behaves, on both sides of a channel.

Where execnet itself is installed (pytest-xdist depends on it), the public
names are compared with its own; behaviour is checked against what
execnet's documentation and its test suite expect (``nox -s
execnet_suite`` runs that suite itself).
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import asyncgw
import asyncgw.sync as execnet
from asyncgw.remote.execmodel import MAIN_THREAD_ONLY_DEADLOCK_TEXT

TIMEOUT = 10.0


@pytest.fixture
def group() -> Iterator[execnet.Group]:
    with execnet.Group() as group:
        yield group


@pytest.fixture
def main_only() -> Iterator[execnet.Gateway]:
    with execnet.Group(execmodel="main_thread_only") as group:
        yield group.makegateway()


def test_all_is_execnets_public_names() -> None:
    real = pytest.importorskip("execnet")
    if real is execnet:  # aliased in this process by an earlier test
        pytest.skip("execnet is asyncgw.sync here")
    assert sorted(execnet.__all__) == sorted(real.__all__)
    namespace: dict[str, object] = {}
    exec("from asyncgw.sync import *", namespace)
    assert sorted(set(namespace) - {"__builtins__"}) == sorted(real.__all__)


def test_execnet_submodules_through_the_alias() -> None:
    from asyncgw.sync import execnet_compat

    module = execnet_compat.submodule("gateway_base", execnet)
    assert module.RemoteError is execnet.RemoteError
    assert module.MAIN_THREAD_ONLY_DEADLOCK_TEXT == MAIN_THREAD_ONLY_DEADLOCK_TEXT
    assert execnet.gateway_base is module  # as `execnet.gateway_base.X` is written
    assert execnet_compat.submodule("rsync", execnet).RSync is execnet.RSync


# -- callbacks that raise


@pytest.mark.anyio
async def test_a_raising_remote_callback_leaves_the_gateway_working() -> None:
    async with asyncgw.Group() as group:
        gw = await group.makegateway()
        ch = gw.remote_exec(
            "def f(item):\n"
            "    raise ValueError(42)\n"
            "ch = channel.gateway.newchannel()\n"
            "ch.setcallback(f)\n"
            "channel.send(ch)\n"
            "channel.receive()\n"
        )
        sub = await ch.receive()
        await sub.send(1)
        with pytest.raises(asyncgw.RemoteError) as info:
            await sub.waitclose(TIMEOUT)
        assert "ValueError: 42" in info.value.formatted
        assert "in f" in info.value.formatted
        # the gateway and its other channels go on
        await ch.send("done")
        await ch.waitclose(TIMEOUT)
        echo = gw.remote_exec("channel.send(channel.receive() * 2)")
        await echo.send(21)
        assert await echo.receive(TIMEOUT) == 42


def test_a_raising_local_callback_closes_its_channel_with_the_traceback(
    group: execnet.Group,
) -> None:
    gw = group.makegateway()
    channel = gw.remote_exec(
        "channel.send(1)\n"
        "try:\n"
        "    channel.receive()\n"
        "except channel.RemoteError as exc:\n"
        "    back = channel.gateway.newchannel()\n"
        "    raise SystemExit('remote saw: ' + str(exc).strip().splitlines()[-1])\n"
    )
    seen: list[object] = []

    def callback(item: object) -> None:
        seen.append(item)
        raise KeyError("boom")

    channel.setcallback(callback, endmarker="END")
    with pytest.raises(execnet.RemoteError) as info:
        channel.waitclose(TIMEOUT)
    assert "KeyError: 'boom'" in info.value.formatted
    assert channel._getremoteerror() is not None
    assert seen == [1, "END"]  # the endmarker still comes, once
    # the gateway goes on
    echo = gw.remote_exec("channel.send(channel.receive() + 1)")
    echo.send(1)
    assert echo.receive(TIMEOUT) == 2


# -- main_thread_only


def test_remote_code_runs_on_the_main_thread_one_at_a_time(main_only: execnet.Gateway) -> None:
    for _ in range(5):  # quick succession: each waits for the one before
        channel = main_only.remote_exec(
            "import threading\nchannel.send(threading.current_thread() is threading.main_thread())"
        )
        assert channel.receive(TIMEOUT) is True
        channel.waitclose(TIMEOUT)
    assert main_only.remote_status().execmodel == "main_thread_only"


def test_a_concurrent_remote_exec_is_refused_after_a_bounded_wait(
    main_only: execnet.Gateway,
) -> None:
    blocker = main_only.remote_exec(
        "channel.send('running')\nchannel.gateway.execmodel.Event().wait()"
    )
    assert blocker.receive(TIMEOUT) == "running"
    started = time.monotonic()
    refused = main_only.remote_exec("channel.send('never')")
    with pytest.raises(execnet.RemoteError) as info:
        refused.receive(TIMEOUT)
    assert info.value.formatted == MAIN_THREAD_ONLY_DEADLOCK_TEXT
    assert 0.9 <= time.monotonic() - started < 5
    # the reader was never held: status still answers
    assert main_only.remote_status().numexecuting == 1


def test_callbacks_run_on_a_receiver_thread_replaying_queued_items_once(
    main_only: execnet.Gateway,
) -> None:
    # As in execnet: values queued before setcallback are replayed by it,
    # first and in order (so on the caller's thread); later ones on the
    # receiver thread; the endmarker once.
    channel = main_only.remote_exec(
        "import threading\n"
        "sub = channel.gateway.newchannel()\n"
        "channel.send(sub)\n"
        "channel.receive()\n"  # 1 and 2 were sent on sub before this
        "seen = []\n"
        "done = threading.Event()\n"
        "def callback(item):\n"
        "    seen.append((item, threading.current_thread() is threading.main_thread()))\n"
        "    if item == 'END': done.set()\n"
        "sub.setcallback(callback, endmarker='END')\n"
        "channel.send('set')\n"
        "done.wait(10)\n"
        "channel.send(seen)\n"
    )
    sub = channel.receive(TIMEOUT)
    sub.send(1)
    sub.send(2)
    channel.send("go")
    assert channel.receive(TIMEOUT) == "set"
    sub.send(3)
    sub.close()
    assert channel.receive(TIMEOUT) == [(1, True), (2, True), (3, False), ("END", False)]


# -- channels, both sides


def test_remote_makefile_write_and_read(group: execnet.Group) -> None:
    gw = group.makegateway()
    channel = gw.remote_exec(
        "out = channel.makefile('w')\n"
        "out.write('hello ')\n"
        "out.write('world')\n"
        "f = channel.makefile('r')\n"
        "channel.send(f.readline())\n"
        "channel.send(f.read(3))\n"
    )
    assert channel.receive(TIMEOUT) == "hello "
    assert channel.receive(TIMEOUT) == "world"
    writer = channel.makefile("w")
    writer.write("line\nabcdef")
    assert channel.receive(TIMEOUT) == "line\n"
    assert channel.receive(TIMEOUT) == "abc"


def test_proxyclose_and_closing_a_running_channel(group: execnet.Group) -> None:
    gw = group.makegateway()
    channel = gw.remote_exec(
        "f = channel.makefile(proxyclose=True)\nf.write('hello world')\nf.close()\n"
    )
    assert channel.receive(TIMEOUT) == "hello world"
    with pytest.raises(channel.RemoteError) as info:  # as in execnet
        channel.receive(TIMEOUT)
    assert "cannot explicitly close channel within remote_exec" in info.value.formatted


def test_io_errors_as_execnet_raises_them(group: execnet.Group) -> None:
    gw = group.makegateway()
    channel = gw.remote_exec("channel.send(1)")
    channel.setcallback(lambda item: None)
    with pytest.raises(OSError, match="receiver callback"):
        channel.receive(TIMEOUT)
    closed = gw.remote_exec("pass")
    closed.waitclose(TIMEOUT)
    with pytest.raises(OSError, match="closed"):
        closed.send(1)


def test_remote_eoferror_is_a_normal_end(group: execnet.Group) -> None:
    gw = group.makegateway()
    channel = gw.remote_exec("channel.send('ready')\nchannel.receive()")
    assert channel.receive(TIMEOUT) == "ready"
    channel.close()
    channel.waitclose(TIMEOUT)  # raises nothing: EOFError ended the code


def test_dump_error_names_what_and_where(group: execnet.Group) -> None:
    gw = group.makegateway()
    channel = gw.remote_exec("channel.receive()")
    with pytest.raises(execnet.DumpError, match=r"can't serialize .*object at value\[1\]\['k'\]"):
        channel.send([1, {"k": object()}])
    channel.close()


# -- gateways and groups


def test_group_execmodel_and_gateway_attributes(group: execnet.Group) -> None:
    assert group.execmodel.backend == "thread"
    with execnet.Group(execmodel="main_thread_only") as main_group:
        gw = main_group.makegateway("popen//id=w")
        assert gw.spec.execmodel == "main_thread_only"
        assert gw.remote_execmodel.backend == "main_thread_only"
        with pytest.raises(ValueError, match="gateways have been created"):
            main_group.set_execmodel("thread")
        gw.node = "xdist sets this"  # type: ignore[attr-defined]
        assert gw.node == "xdist sets this"  # type: ignore[attr-defined]
        channel = gw.remote_exec("channel.send(channel.gateway.execmodel.backend)")
        assert channel.receive(TIMEOUT) == "main_thread_only"
    with pytest.raises(ValueError, match="unknown execmodel 'gevent'"):
        execnet.Group(execmodel="gevent")


def test_rinfo_is_cached_and_hasreceiver_exit_join(group: execnet.Group) -> None:
    gw = group.makegateway()
    info = gw._rinfo()
    assert info.executable == sys.executable
    assert info.version_info[:2] == tuple(sys.version_info[:2])
    assert gw._rinfo() is info
    assert gw._rinfo(update=True) is not info
    assert gw.hasreceiver()
    gw.exit()
    gw.join(TIMEOUT)
    assert not gw.hasreceiver()
    assert gw not in group


def test_xspec_via_popen_starts_through_the_proxy(group: execnet.Group) -> None:
    proxy = group.makegateway("popen//id=proxy")
    gw = group.makegateway("popen//via=proxy//id=inner")
    proxy_pid = proxy._rinfo().pid
    ppid = gw.remote_exec("import os; channel.send(os.getppid())").receive(TIMEOUT)
    assert ppid == proxy_pid


def test_remote_code_sees_execnet_when_the_caller_aliased_it() -> None:
    import asyncgw.compat

    saved = {name: module for name, module in sys.modules.items() if name.startswith("execnet")}
    try:
        alias = asyncgw.compat.install()
        with alias.Group() as group:
            channel = group.makegateway().remote_exec(
                "import execnet\n"
                "try:\n"
                "    execnet.dumps(object())\n"
                "except execnet.DumpError as exc:\n"
                "    channel.send(('refused', execnet.loads(execnet.dumps([1, 'a']))))\n"
            )
            assert channel.receive(TIMEOUT) == ("refused", [1, "a"])
    finally:
        for name in [name for name in sys.modules if name.startswith("execnet")]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_make_receive_queue_of_a_group(group: execnet.Group) -> None:
    group.makegateways(["popen"] * 2)
    multi = group.remote_exec("channel.send(channel.gateway.id)")
    received: queue.Queue[object] = multi.make_receive_queue(endmarker="END")
    items = sorted(str(received.get(timeout=TIMEOUT)[1]) for _ in range(4))
    assert items == ["END", "END", "gw0", "gw1"]
    assert threading.active_count() < 50


def test_a_channel_remote_code_drops_is_closed_and_forgotten(group: execnet.Group) -> None:
    gw = group.makegateway()
    sub = gw.newchannel()
    seen: list[object] = []
    sub.setcallback(seen.append, endmarker="END")
    channel = gw.remote_exec(
        "import threading\n"
        "def produce(c):\n"
        "    for i in range(3):\n"
        "        c.send(i)\n"
        "threading.Thread(target=produce, args=(channel.receive(),)).start()\n"
    )
    channel.send(sub)
    sub.waitclose(TIMEOUT)  # closed when the thread let go of it
    assert seen == [0, 1, 2, "END"]
    channel.waitclose(TIMEOUT)
    for _ in range(3):  # channels the remote code made and dropped leave no trace
        gw.remote_exec("channel.gateway.newchannel()").waitclose(TIMEOUT)
    assert gw.remote_status().numchannels <= 1  # the status request's own


def test_an_empty_spec_is_the_default(group: execnet.Group) -> None:
    gw = group.makegateway("")
    assert gw.spec.popen and gw.spec.execmodel == "thread"
