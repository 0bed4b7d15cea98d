"""Log forwarding and import forwarding (issue #12): remote records, lines,
warnings and thread exceptions reaching ``asyncgw.remote.<id>`` with the
remote pid, thread and corrected time; a flood that costs channel traffic
little and is counted; imports of the caller's own modules, and refusals."""

from __future__ import annotations

import asyncio
import importlib.machinery
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

import asyncgw
import asyncgw.sync
from asyncgw.objects.imports import find_module_source, import_server, parse_names
from asyncgw.objects.logs import ClockOffset, LogForwarding, log_forwarding

from .conftest import PYTHON39

pytestmark = pytest.mark.anyio


class Collector(logging.Handler):
    """Keeps the records of ``asyncgw.remote``; a test awaits a condition."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def collector() -> Iterator[Collector]:
    """A handler on ``asyncgw.remote`` at DEBUG (set before the gateways
    start: it is the remote threshold). The records do not propagate to
    pytest's capture handlers, which would format each one."""
    logger = logging.getLogger("asyncgw.remote")
    handler = Collector()
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield handler
    logger.removeHandler(handler)
    logger.level, logger.propagate = saved


@pytest.fixture
async def logging_gateway(collector: Collector) -> AsyncIterator[asyncgw.Gateway]:
    async with asyncgw.Group(exit_timeout=5.0) as group:
        yield await group.makegateway("popen//forward_logs")


def forwarding_of(gateway: asyncgw.Gateway) -> LogForwarding:
    forwarding = log_forwarding(gateway)
    assert forwarding is not None
    return forwarding


# -- logs


async def test_records_arrive_with_name_level_pid_thread_and_time(
    logging_gateway: asyncgw.Gateway, collector: Collector
) -> None:
    gw = logging_gateway
    before = time.time()
    channel = gw.remote_exec(
        """
        import logging, threading
        threading.current_thread().name = "worker-7"
        log = logging.getLogger("app.db")
        log.debug("connecting to %s", "db1")
        log.warning("slow query: %d ms", 1200)
        try:
            1 / 0
        except ZeroDivisionError:
            log.exception("query failed")
        logging.getLogger().error("from the root logger")
        """
    )
    await channel.waitclose()
    after = time.time()
    await collector.wait_for(lambda: len(collector.records) == 4)
    debug, warning, error, root = collector.records
    prefix = f"asyncgw.remote.{gw.id}"
    assert [r.name for r in collector.records] == [f"{prefix}.app.db"] * 3 + [prefix]
    assert [r.levelno for r in collector.records] == [10, 30, 40, 40]
    assert [r.levelname for r in collector.records] == ["DEBUG", "WARNING", "ERROR", "ERROR"]
    assert debug.getMessage() == "connecting to db1"
    assert warning.getMessage() == "slow query: 1200 ms"
    assert root.getMessage() == "from the root logger"
    assert error.exc_text is not None and "ZeroDivisionError: division by zero" in error.exc_text
    formatted = logging.Formatter("%(message)s").format(error)
    assert formatted.startswith("query failed\nTraceback (most recent call last):")
    for record in collector.records:
        assert record.process == record.pid == gw.remote_pid  # type: ignore[attr-defined]
        assert record.host == socket.gethostname()  # type: ignore[attr-defined]
        assert record.threadName == record.remote_thread == "worker-7"  # type: ignore[attr-defined]
        assert before - 0.05 <= record.created <= after + 0.05
        assert record.msecs == pytest.approx((record.created % 1) * 1000, abs=1e-3)
        assert record.funcName == "<module>"
    assert debug.lineno == 5 and debug.pathname.startswith("<remote exec")


async def test_warnings_thread_exceptions_and_output(
    logging_gateway: asyncgw.Gateway, collector: Collector
) -> None:
    gw = logging_gateway
    channel = gw.remote_exec(
        """
        import sys, threading, warnings
        warnings.warn("old api", FutureWarning, stacklevel=1)
        def crash():
            raise RuntimeError("thread crashed")
        thread = threading.Thread(target=crash, name="cruncher")
        thread.start()
        thread.join()
        sys.stderr.write("disk almost full\\n")
        """
    )
    await channel.waitclose()
    prefix = f"asyncgw.remote.{gw.id}"
    await collector.wait_for(lambda: len(collector.records) == 3)
    warning, crash, stderr = collector.records
    assert warning.name == f"{prefix}.py.warnings" and warning.levelno == logging.WARNING
    assert "FutureWarning: old api" in warning.getMessage()
    assert crash.name == f"{prefix}.threading" and crash.levelno == logging.ERROR
    assert crash.getMessage() == "Exception in thread cruncher"
    assert crash.threadName == "cruncher"
    assert crash.exc_text is not None and "RuntimeError: thread crashed" in crash.exc_text
    assert stderr.name == f"{prefix}.stderr" and stderr.levelno == logging.WARNING
    assert stderr.getMessage() == "disk almost full"


async def test_print_lines_arrive_in_order(
    logging_gateway: asyncgw.Gateway, collector: Collector
) -> None:
    gw = logging_gateway
    channel = gw.remote_exec(
        """
        import sys
        for i in range(300):
            print("line", i)
            if i % 100 == 0:
                print("to stderr", i, file=sys.stderr)
        sys.stdout.write("a partial ")
        sys.stdout.write("line")
        sys.stdout.flush()
        print("multi\\nline\\n", end="")
        """
    )
    await channel.waitclose()
    await collector.wait_for(lambda: len(collector.records) == 300 + 3 + 3)
    prefix = f"asyncgw.remote.{gw.id}"
    messages = [(r.name.removeprefix(prefix), r.levelno, r.getMessage()) for r in collector.records]
    expected: list[tuple[str, int, str]] = []
    for i in range(300):
        expected.append((".stdout", logging.INFO, f"line {i}"))
        if i % 100 == 0:
            expected.append((".stderr", logging.WARNING, f"to stderr {i}"))
    expected += [(".stdout", logging.INFO, text) for text in ("a partial line", "multi", "line")]
    assert messages == expected
    created = [r.created for r in collector.records]
    assert created == sorted(created)


async def test_clock_offset_corrects_remote_time(
    logging_gateway: asyncgw.Gateway, collector: Collector
) -> None:
    gw = logging_gateway
    forwarding = forwarding_of(gw)
    assert abs(forwarding.offset) < 0.05  # one machine, one clock
    # The remote clock jumps 1000 s ahead; measured again, the offset says so.
    await gw.remote_exec(
        """
        import time
        real_time, real_time_ns = time.time, time.time_ns
        time.time = lambda: real_time() + 1000.0
        time.time_ns = lambda: real_time_ns() + 1000 * 10**9
        """
    ).waitclose()
    clock = await forwarding.measure_offset()
    assert isinstance(clock, ClockOffset) and clock.rtt > 0
    assert forwarding.offset == pytest.approx(1000.0, abs=0.05)
    before = time.time()
    await gw.remote_exec("import logging; logging.getLogger('clock').info('tick')").waitclose()
    after = time.time()
    await collector.wait_for(lambda: bool(collector.records))
    (record,) = collector.records
    assert before - 0.05 <= record.created <= after + 0.05
    shift = record.remote_created - record.created  # type: ignore[attr-defined]
    assert shift == pytest.approx(forwarding.offset, abs=1e-6)
    assert forwarding.corrected(5000.0) == pytest.approx(5000.0 - forwarding.offset)


async def test_threshold_follows_the_local_level_and_can_change(collector: Collector) -> None:
    logging.getLogger("asyncgw.remote").setLevel(logging.WARNING)
    async with asyncgw.Group(forward_logs=True) as group:
        gw = await group.makegateway("popen")
        forwarding = forwarding_of(gw)
        assert forwarding.threshold == logging.WARNING
        code = "import logging; logging.getLogger('x').info('info'); print('out')\n" * 2
        code += "logging.getLogger('x').warning('warning')"
        await gw.remote_exec(code).waitclose()
        await collector.wait_for(lambda: len(collector.records) == 1)
        logging.getLogger("asyncgw.remote").setLevel(logging.INFO)
        await forwarding.set_level()  # the local level, now
        assert forwarding.threshold == logging.INFO
        await gw.remote_exec(code).waitclose()
        await collector.wait_for(lambda: len(collector.records) == 6)
        assert [r.getMessage() for r in collector.records] == [
            "warning", "info", "out", "info", "out", "warning",
        ]  # fmt: skip
        assert forwarding.received == 6  # the info records of the first run were never sent
    await asyncio.wait_for(forwarding.ended.wait(), 5)


#: A flood: ~25 000 records a second attempted, far more than forwarding
#: takes. It lets go of the GIL every third record: a thread that never
#: does (a pure CPU loop) costs every other remote thread a GIL switch
#: interval (5 ms) each time it needs the GIL back, with or without
#: forwarding (CPython's convoy effect), which is not what is measured here.
FLOOD = """
import logging, threading, time
log = logging.getLogger("flood")
def flood(seconds):
    end = time.monotonic() + seconds
    count = 0
    while time.monotonic() < end:
        log.info("flood %d", count)
        count += 1
        if count % 3 == 0:
            time.sleep(0)
    channel.send(count)
thread = threading.Thread(target=flood, args=(channel.receive(),), name="flooder")
thread.start()
thread.join()
"""

ECHO = """
for item in channel:
    channel.send(item)
"""


async def channel_round_trip(channel: asyncgw.Channel, item: int) -> None:
    """One echo round trip of ``item``."""
    await channel.send(item)
    assert await channel.receive() == item


async def test_flood_is_bounded_counted_and_spares_channels(
    logging_gateway: asyncgw.Gateway, collector: Collector
) -> None:
    gw = logging_gateway
    forwarding = forwarding_of(gw)
    echo = gw.remote_exec(ECHO)
    flood = gw.remote_exec(FLOOD)
    await flood.send(1.5)
    result = asyncio.ensure_future(flood.receive())
    await collector.wait_for(lambda: forwarding.received >= 2000)  # in full swing
    # Channels are spared: the echo goes on answering while the flood lasts.
    # (How fast it answers is a figure for a benchmark, not for a unit test
    # on a machine that may be busy with more than this test.)
    answered = 0
    while not result.done():
        await channel_round_trip(echo, answered)
        answered += 1
    sent = await result
    echo.close()
    assert answered >= 20, f"the echo answered {answered} times during the flood"
    # Every record either arrived, in order, or was counted as dropped and
    # reported (the last report waits up to REPORT_INTERVAL).
    reports = lambda: [r for r in collector.records if hasattr(r, "dropped")]  # noqa: E731
    await collector.wait_for(
        lambda: (
            sum(r.dropped for r in reports()) == forwarding.dropped  # type: ignore[attr-defined]
            and forwarding.received + forwarding.dropped == sent
        )
    )
    floods = [r for r in collector.records if r.name.endswith(".flood")]
    assert len(floods) == forwarding.received
    numbers = [int(r.getMessage().split()[1]) for r in floods]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert forwarding.dropped > 0, "the flood fitted: make it longer"
    (report, *_) = reports()
    assert report.name == f"asyncgw.remote.{gw.id}" and report.levelno == logging.WARNING
    assert report.getMessage().startswith(f"{report.dropped} log records dropped on ")  # type: ignore[attr-defined]


REMOTE_STATE = """
import logging, sys, threading
handlers = [type(h).__name__ for h in logging.getLogger().handlers]
channel.send((type(sys.stdout).__name__, type(sys.stderr).__name__, handlers,
              threading.excepthook is threading.__excepthook__, logging.getLogger().level))
"""


async def test_close_puts_the_remote_back(
    logging_gateway: asyncgw.Gateway, collector: Collector
) -> None:
    gw = logging_gateway
    forwarding = forwarding_of(gw)
    state = await gw.remote_exec(REMOTE_STATE).receive()
    assert state == ("LineWriter", "LineWriter", ["ForwardingHandler"], False, logging.DEBUG)
    forwarding.close()
    await asyncio.wait_for(forwarding.ended.wait(), 5)
    # The remote side ends on its own: wait for the streams to come back.
    async with asyncio.timeout(5):
        while state[0] == "LineWriter":
            state = await gw.remote_exec(REMOTE_STATE).receive()
    assert state == ("TextIOWrapper", "TextIOWrapper", [], True, logging.WARNING)
    with pytest.raises(asyncgw.ChannelClosed):
        await forwarding.set_level(logging.INFO)


async def test_forwarding_ends_with_the_gateway(collector: Collector) -> None:
    async with asyncgw.Group(["popen//forward_logs"]) as group:
        gw = group[0]
        forwarding = forwarding_of(gw)
        await gw.remote_exec("print('bye')").waitclose()
        await collector.wait_for(lambda: bool(collector.records))
    await asyncio.wait_for(forwarding.ended.wait(), 5)
    assert log_forwarding(gw) is forwarding
    assert repr(forwarding).startswith("<LogForwarding 'gw0' received=1 dropped=0 offset=")


# -- imports


@pytest.fixture
def local_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Packages only this side has: ``fwpkg`` (pure Python), ``fwext`` (with
    an "extension module"), ``fwshadow`` (also on the remote, differently)."""
    root = tmp_path / "local"
    (root / "fwpkg").mkdir(parents=True)
    (root / "fwpkg" / "__init__.py").write_text("from . import sub\nVALUE = 42\n")
    (root / "fwpkg" / "sub.py").write_text(
        "def double(x):\n    return 2 * x\n\n\ndef boom():\n    raise ValueError('boom in sub')\n"
    )
    (root / "fwpkg" / "things.py").write_text(
        "class Doubler:\n    def run(self, x):\n        from fwpkg.more import double\n"
        "        return double(x)\n"
    )
    (root / "fwpkg" / "more.py").write_text("from fwpkg.sub import double\n")
    (root / "fwext").mkdir()
    (root / "fwext" / "__init__.py").write_text("")
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (root / "fwext" / f"fast{suffix}").write_bytes(b"\x7fELF not really")
    (root / "fwshadow.py").write_text("WHERE = 'caller'\n")
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "fwshadow.py").write_text("WHERE = 'remote'\n")
    monkeypatch.syspath_prepend(str(root))
    return tmp_path


async def test_import_of_a_package_only_the_caller_has(local_packages: Path) -> None:
    async with asyncgw.Group(forward_imports=["fwpkg"]) as group:
        gw = await group.makegateway(f"popen//chdir={local_packages / 'remote'}")
        server = import_server(gw)
        assert server is not None and server.allowed == ["fwpkg"]
        channel = gw.remote_exec(
            """
            import importlib.machinery
            # This interpreter cannot find it on its own.
            channel.send(importlib.machinery.PathFinder.find_spec("fwpkg") is None)
            import fwpkg.sub
            channel.send((fwpkg.VALUE, fwpkg.sub.double(21), fwpkg.sub.__file__, fwpkg.__path__))
            channel.send(type(fwpkg.__spec__.loader).__name__)
            fwpkg.sub.boom()
            """
        )
        assert await channel.receive() is True
        value, double, filename, path = await channel.receive()
        assert (value, double, path) == (42, 42, [])
        assert filename == str(local_packages / "local" / "fwpkg" / "sub.py")
        assert await channel.receive() == "ForwardedLoader"
        with pytest.raises(asyncgw.RemoteError) as info:
            await channel.waitclose()
        formatted = str(info.value)
        assert f'File "{filename}", line 6, in boom' in formatted
        assert "raise ValueError('boom in sub')" in formatted  # the source line
        assert formatted.rstrip().endswith("ValueError: boom in sub")
        assert server.requested == server.served == ["fwpkg", "fwpkg.sub"]


async def test_remote_objects_of_a_forwarded_package(local_packages: Path) -> None:
    # The object's module, and one its method imports, are fetched while
    # the request is being served on the worker's reader thread.
    async with asyncgw.Group(forward_imports=["fwpkg"]) as group:
        gw = await group.makegateway(f"popen//chdir={local_packages / 'remote'}")
        async with asyncio.timeout(20):
            doubler = await gw.create("fwpkg.things:Doubler")
            assert await doubler.run(21) == 42
        assert import_server(gw).served == ["fwpkg", "fwpkg.sub", "fwpkg.things", "fwpkg.more"]


async def test_records_queued_at_termination_arrive(collector: Collector) -> None:
    # The worker sends what its forwarding holds before it exits when told
    # to: leaving the group right after the code ends loses nothing.
    async with asyncgw.Group(forward_logs=True) as group:
        gw = await group.makegateway("popen")
        channel = gw.remote_exec("for i in range(3000):\n    print('line', i)")
        await channel.waitclose()
    lines = [r.getMessage() for r in collector.records if r.name.endswith(".stdout")]
    assert lines == [f"line {i}" for i in range(3000)]


def test_blocking_group_forwards_imports_and_logs(
    local_packages: Path, collector: Collector
) -> None:
    group = asyncgw.sync.Group(forward_imports=["fwpkg"], forward_logs=True)
    try:
        gw = group.makegateway(f"popen//chdir={local_packages / 'remote'}")
        channel = gw.remote_exec("import fwpkg\nprint(fwpkg.VALUE)\nchannel.send(fwpkg.VALUE)")
        assert channel.receive(timeout=20) == 42
    finally:
        group.terminate(timeout=5)
    assert [r.getMessage() for r in collector.records if r.name.endswith(".stdout")] == ["42"]


async def test_refused_imports_and_names_never_asked(local_packages: Path) -> None:
    spec = f"popen//chdir={local_packages / 'remote'}//forward_imports=fwext,json"
    async with asyncgw.Group() as group:
        gw = await group.makegateway(spec)
        server = import_server(gw)
        assert server is not None
        channel = gw.remote_exec(
            """
            import sys
            for name in ("fwpkg", "fwext.fast", "fwext.missing"):
                try:
                    __import__(name)
                except ImportError as exc:
                    channel.send((type(exc).__name__, str(exc)))
            import json
            channel.send(type(json.__spec__.loader).__name__)
            # A remote that asks for what it was not given gets a refusal.
            finder = [f for f in sys.meta_path if type(f).__name__ == "ForwardedImportFinder"][0]
            channel.send(finder.client.request("os"))
            """
        )
        not_listed = await channel.receive()
        extension = await channel.receive()
        missing = await channel.receive()
        assert not_listed == ("ModuleNotFoundError", "No module named 'fwpkg'")
        assert extension[0] == "ImportError"
        refusal = "the caller refused to send fwext.fast: fwext.fast is an extension module"
        assert refusal in extension[1]
        assert missing == ("ModuleNotFoundError", "No module named 'fwext.missing'")
        assert await channel.receive() == "SourceFileLoader"  # its own json, not shadowed
        assert await channel.receive() == (
            "refused",
            "'os' is not among the names forwarded here (fwext, json)",
        )
        await channel.waitclose()
        # fwpkg was never asked for, nor json: the remote has its own.
        assert server.requested == ["fwext", "fwext.fast", "fwext.missing", "os"]
        assert set(server.refused) == {"fwext.fast", "fwext.missing", "os"}


@pytest.mark.parametrize("entry, where", [("fwshadow", "remote"), ("!fwshadow", "caller")])
async def test_shadowing_is_asked_for(local_packages: Path, entry: str, where: str) -> None:
    remote_dir = local_packages / "remote"
    async with asyncgw.Group() as group:
        gw = await group.makegateway(f"popen//chdir={remote_dir}//forward_imports={entry}")
        code = f"import sys; sys.path.insert(0, {str(remote_dir)!r}); import fwshadow"
        channel = gw.remote_exec(code + "\nchannel.send(fwshadow.WHERE)")
        assert await channel.receive() == where


@pytest.mark.python("3.9")  # skips, or fails in CI, where no 3.9 is found
async def test_both_on_python39(local_packages: Path, collector: Collector) -> None:
    spec = f"popen//python={PYTHON39}//chdir={local_packages / 'remote'}"
    async with asyncgw.Group(forward_imports=["fwpkg"], forward_logs=True) as group:
        gw = await group.makegateway(spec)
        channel = gw.remote_exec("import fwpkg, logging\nprint(fwpkg.sub.double(2))")
        await channel.waitclose()
        await collector.wait_for(lambda: bool(collector.records))
        (record,) = collector.records
        assert (record.name, record.getMessage()) == (f"asyncgw.remote.{gw.id}.stdout", "4")


def test_names_and_answers_locally(local_packages: Path) -> None:
    assert parse_names(["a", " !b", "a"]) == (["a", "b"], ["b"])
    for wrong in ("a.b", "", "!", "1x"):
        with pytest.raises(ValueError, match="not a top-level module name"):
            parse_names([wrong])
    kind, source, filename, package = find_module_source("fwpkg", ["fwpkg"])
    assert (kind, package) == ("module", True) and "VALUE = 42" in source
    assert filename.endswith("fwpkg/__init__.py")
    assert "fwpkg" not in sys.modules  # found without being imported here
    assert find_module_source("fwpkg.nothere", ["fwpkg"])[0] == "missing"
    assert find_module_source("sys", ["sys"]) == (
        "refused",
        "sys is built-in here; only Python source is forwarded",
    )
    assert find_module_source("../etc", ["fwpkg"])[0] == "refused"
