"""The blocking facade: execnet's API, thread-safe, delegating to the core."""

from __future__ import annotations

import doctest
import io
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

import asyncgw
import asyncgw.sync as execnet
from asyncgw.sync.channel import _inline_callbacks, run_inline

HERE = Path(__file__).parent


@pytest.fixture
def group() -> execnet.Group:
    with execnet.Group() as group:
        yield group


def test_execnet_documentation_examples_pass() -> None:
    result = doctest.testfile(
        str(HERE / "execnet_docs.txt"),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL,
    )
    assert result.attempted > 50
    assert result.failed == 0


def test_public_names_follow_execnet() -> None:
    for name in [
        "Group", "Gateway", "Channel", "MultiChannel", "XSpec", "makegateway", "default_group",
        "RemoteError", "TimeoutError", "DataFormatError", "DumpError", "LoadError",
        "HostNotFound", "dumps", "loads", "dump", "load",
    ]:  # fmt: skip
        assert name in execnet.__all__, name
        assert hasattr(execnet, name), name
    assert issubclass(execnet.TimeoutError, TimeoutError)


def test_round_trip_timeout_and_iteration(group: execnet.Group) -> None:
    gw = group.makegateway()
    channel = gw.remote_exec("for x in channel: channel.send(x * 2)")
    channel.send(21)
    assert channel.receive(timeout=10) == 42
    with pytest.raises(execnet.TimeoutError):
        channel.receive(timeout=0.05)
    channel.close()
    items = list(gw.remote_exec("for i in range(4): channel.send(i)"))
    assert items == [0, 1, 2, 3]


def test_errors_surface_in_the_caller(group: execnet.Group) -> None:
    gw = group.makegateway()
    channel = gw.remote_exec("channel.send(channel.receive())")
    with pytest.raises(execnet.DumpError, match=r"builtins\.object"):
        channel.send(object())
    channel.send(1)
    assert channel.receive() == 1
    with pytest.raises(EOFError):
        channel.receive()
    with pytest.raises(execnet.RemoteError, match="ZeroDivisionError"):
        gw.remote_exec("1/0").receive()
    with pytest.raises(execnet.HostNotFound):
        group.makegateway("popen//python=/nonexistent/python")


def test_send_order_is_kept_through_close(group: execnet.Group) -> None:
    gw = group.makegateway()
    channel = gw.remote_exec(
        "items = list(channel)\nchannel.gateway.newchannel()\nside = items.pop()\nside.send(items)"
    )
    side = gw.newchannel()
    for i in range(1000):
        channel.send(i)
    channel.send(side)
    channel.close()
    assert side.receive(timeout=10) == list(range(1000))


def test_callbacks_run_off_the_loop_and_may_block(group: execnet.Group) -> None:
    gw = group.makegateway()
    answers = gw.newchannel()
    channel = gw.remote_exec("side = channel.receive()\nfor i in range(3): side.send(i)")
    received: list[object] = []
    done = threading.Event()

    def callback(item: object) -> None:
        if item == "END":
            done.set()
            return
        received.append(item)
        echo.send(item)  # blocking facade call inside a callback

    echo = gw.remote_exec("for x in channel: channel.send(('echo', x))")
    answers.setcallback(callback, endmarker="END")
    channel.send(answers)
    assert [echo.receive(timeout=10) for _ in range(3)] == [("echo", i) for i in range(3)]
    answers.close()
    assert done.wait(10)
    assert received == [0, 1, 2]
    echo.close()


def test_inline_callbacks_run_on_the_loop_thread_in_order(group: execnet.Group) -> None:
    # What asyncgw.xdist asks for xdist's event callback: called on the loop
    # thread as values arrive (execnet's receiver thread), no hand-off.
    gw = group.makegateway()
    calls: list[tuple[object, str]] = []

    def callback(item: object) -> None:
        calls.append((item, threading.current_thread().name))

    def failing(item: object) -> None:
        raise ValueError(f"refused {item}")

    run_inline(callback)
    run_inline(failing)
    try:
        channel = gw.remote_exec("for i in range(3): channel.send(i)")
        channel.setcallback(callback, endmarker="END")
        channel.waitclose(10)
        assert calls == [(item, "asyncgw-loop") for item in (0, 1, 2, "END")]
        # One that raises closes its channel with the error, as on the
        # callback thread; the gateway goes on.
        refused = gw.remote_exec("channel.send(1); channel.receive()")
        refused.setcallback(failing)
        with pytest.raises(execnet.RemoteError, match="refused 1"):
            refused.waitclose(10)
        assert gw.remote_exec("channel.send(2)").receive(timeout=10) == 2
    finally:
        _inline_callbacks.difference_update((callback, failing))


def test_multichannel_and_receive_queue(group: execnet.Group) -> None:
    group.makegateways(["popen"] * 3)
    mch = group.remote_exec("channel.send(channel.gateway.id); channel.send(channel.receive())")
    assert mch.receive_each() == ["gw0", "gw1", "gw2"]
    mch.send_each("x")
    pairs = mch.receive_each(withchannel=True)
    assert [value for _, value in pairs] == ["x"] * 3
    mch.waitclose(timeout=10)
    queue = group.remote_exec("channel.send(1)").make_receive_queue(endmarker=None)
    items = [queue.get(timeout=10)[1] for _ in range(6)]
    assert sorted(items, key=str) == [1, 1, 1, None, None, None]


def test_makefile_write_and_read(group: execnet.Group) -> None:
    gw = group.makegateway()
    channel = gw.remote_exec(
        "f = channel.receive()\nfor line in ['a\\n', 'bc\\n', 'd']: f.send(line)\nf.close()"
    )
    side = gw.newchannel()
    channel.send(side)
    reader = side.makefile("r")
    assert reader.readline() == "a\n"
    assert reader.read() == "bc\nd"
    writer = gw.remote_exec("result = channel.receive()\nresult.send(''.join(channel))")
    result = gw.newchannel()
    writer.send(result)
    out = writer.makefile("w", proxyclose=True)
    out.write("hello ")
    out.write("world")
    out.close()
    assert result.receive(timeout=10) == "hello world"


def test_gateway_info_status_call_exit(group: execnet.Group) -> None:
    gw = group.makegateway()
    info = gw._rinfo()
    assert info.pid == gw._gateway.remote_pid and info.executable
    assert gw._rinfo() is info and gw._rinfo(update=True) is not info
    assert gw.remote_status().numexecuting == 0

    def add(a, b):  # type: ignore[no-untyped-def]
        return a + b

    assert gw.call(add, 2, 3) == 5
    assert gw.hasreceiver()
    gw.exit()
    gw.join(timeout=10)
    assert not gw.hasreceiver()
    assert gw not in group


def test_serializer_dump_and_load() -> None:
    value = {"a": [1, 2.5, (b"x", None)], 3: frozenset({"y"})}
    assert execnet.loads(execnet.dumps(value)) == value
    buffer = io.BytesIO()
    execnet.dump(buffer, value)
    execnet.dump(buffer, 7)
    buffer.seek(0)
    assert execnet.load(buffer) == value
    assert execnet.load(buffer) == 7
    with pytest.raises(EOFError):
        execnet.load(buffer)
    with pytest.raises(execnet.LoadError):
        execnet.load(io.BytesIO(b"\x00\x00\x00\x09N"))


def test_threads_use_gateways_and_channels_at_once() -> None:
    errors: list[BaseException] = []
    results: dict[int, int] = {}

    def work(index: int) -> None:
        try:
            group = execnet.Group()
            try:
                gw = group.makegateway()
                channel = gw.remote_exec("for x in channel: channel.send(x + 1)")
                total = 0
                for i in range(300):
                    channel.send(i)
                    total += channel.receive(timeout=30)
                results[index] = total
                channel.close()
            finally:
                group.terminate(timeout=5)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert results == {i: sum(range(1, 301)) for i in range(6)}


def test_works_when_the_calling_thread_runs_an_event_loop() -> None:
    import asyncio

    async def inside_a_loop() -> object:
        gw = execnet.makegateway()
        try:
            return gw.remote_exec("channel.send('from a loop')").receive(timeout=10)
        finally:
            gw.exit()

    assert asyncio.run(inside_a_loop()) == "from a loop"


#: Interpreters the exit guarantee is checked on, besides this one.
OTHER_PYTHONS = [
    f"/root/.pyenv/versions/{version}/bin/python{version.rsplit('.', 1)[0]}"
    for version in ("3.12.1", "3.13.0")
]


def _python_path_for(tmp_path: Path) -> str:
    """A directory holding asyncgw and its pure-Python dependencies, so that
    another interpreter version can import them from this environment."""
    import importlib.util

    shelf = tmp_path / "shelf"
    shelf.mkdir()
    for name in ("asyncgw", "anyio", "idna", "sniffio", "typing_extensions"):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        target = origin.parent if origin.name == "__init__.py" else origin
        (shelf / target.name).symlink_to(target)
    return str(shelf)


@pytest.mark.parametrize(
    "python",
    [sys.executable, *(p for p in OTHER_PYTHONS if os.path.exists(p))],
    ids=lambda p: Path(p).name,
)
def test_script_that_never_terminates_leaves_no_child(tmp_path: Path, python: str) -> None:
    script = tmp_path / "forgetful.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncgw.sync as execnet

            group = execnet.Group(["popen"] * 3)
            group[0].remote_exec("import time; time.sleep(1000)")
            gw = execnet.makegateway()
            forkserver = group[1].remote_exec("import os; channel.send(os.getppid())").receive()
            pids = [g._gateway.remote_pid for g in group] + [gw._gateway.remote_pid, forkserver]
            print(*pids, flush=True)
            """
        )
    )
    env = dict(os.environ)
    if python != sys.executable:
        env["PYTHONPATH"] = _python_path_for(tmp_path)
    proc = subprocess.run(
        [python, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "can't create new thread" not in proc.stderr
    assert "Exception ignored" not in proc.stderr
    pids = [int(pid) for pid in proc.stdout.split()]
    assert len(pids) == 5  # 4 workers and the fork server of the group's 3
    deadline = time.monotonic() + 10
    while any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        for pid in pids
    ):
        assert time.monotonic() < deadline, f"children {pids} survived the script"
        time.sleep(0.05)


def test_facade_channels_are_the_core_channels(group: execnet.Group) -> None:
    gw = group.makegateway()
    channel = gw.remote_exec("channel.send(channel.gateway.newchannel())")
    received = channel.receive(timeout=10)
    assert isinstance(received, execnet.Channel)
    assert isinstance(received._channel, asyncgw.Channel)
    assert received.gateway is gw
    assert os.getpid() != gw._rinfo().pid


def test_send_to_a_remote_that_does_not_read_blocks_up_to_its_timeout(
    group: execnet.Group,
) -> None:
    """Back-pressure through the facade: a full window blocks ``send``; with
    a timeout it gives up having sent nothing, and the channel goes on."""
    gw = group.makegateway("popen")
    control = gw.remote_exec(
        "data = channel.receive(); channel.receive()\n"
        "channel.send(sum(len(item) for item in iter(data.receive, None)))"
    )
    data = gw.newchannel()
    control.send(data)
    chunk = b"x" * (256 * 1024)
    sent = 0
    with pytest.raises(execnet.TimeoutError, match="nothing was sent"):
        for _ in range(1000):  # 250 MiB: far beyond window and outbox
            data.send(chunk, timeout=0.5)
            sent += 1
    assert 8 <= sent * len(chunk) // (1024 * 1024) <= 16  # window (8 MiB) plus outbox
    control.send("go")
    data.send(None)
    assert control.receive(timeout=30) == sent * len(chunk)


def test_sends_from_threads_keep_their_order_small_and_large(group: execnet.Group) -> None:
    # Small values are written from the sending thread, large ones and those
    # behind a full window through the loop: per thread, order must hold.
    gw = group.makegateway()
    channel = gw.remote_exec(
        "seen = {}\n"
        "for item in channel:\n"
        "    if item is None:\n"
        "        break\n"
        "    tag, index, blob = item\n"
        "    assert seen.get(tag, -1) == index - 1, (tag, index)\n"
        "    seen[tag] = index\n"
        "channel.send(sorted(seen.items()))\n"
    )
    big = b"x" * 200_000

    def sender(tag: int) -> None:
        for index in range(300):
            channel.send((tag, index, big if index % 50 == 7 else b""))

    threads = [threading.Thread(target=sender, args=(tag,)) for tag in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    channel.send(None)
    assert channel.receive(timeout=30) == [(tag, 299) for tag in range(4)]
