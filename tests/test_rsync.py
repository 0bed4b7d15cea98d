"""RSync, async and blocking, against real popen gateways.

What travels is counted through the ``progress`` callback and the
``_report_send_file`` hook, and reads of source files through an audit
hook, so "nothing was sent" and "read once" are measured, not assumed.
mtimes are always set explicitly: a rewrite within one clock tick of the
filesystem would otherwise keep the old one.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import asyncgw
import asyncgw.sync
from asyncgw._loopthread import loop_thread
from asyncgw.files import RSync
from asyncgw.files.rsync import BLOCK_SIZE
from asyncgw.sync.files import RSync as BlockingRSync

from .conftest import PYTHON39

# ------------------------------------------------------------------ helpers


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything under ``root``: kind, mode and content or link target."""
    found: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("l", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("d", stat.S_IMODE(st.st_mode))
            else:
                found[rel] = ("f", stat.S_IMODE(st.st_mode), path.read_bytes(), st.st_mtime_ns)
    return found


def source_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file() and not path.is_symlink())


def set_mtime(path: Path, seconds: int) -> None:
    os.utime(path, ns=(seconds * 10**9, seconds * 10**9))


def make_tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "top.txt").write_text("top")
    (root / "sub" / "a.py").write_text("print('a')\n")
    (root / "sub" / "deeper" / "b.bin").write_bytes(bytes(range(256)) * 10)
    (root / "empty").write_bytes(b"")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    for number, path in enumerate(sorted(root.rglob("*"))):
        if path.is_file():
            set_mtime(path, 1_600_000_000 + number)


class Counting(RSync):
    """Counts the files reported as sent, per gateway id."""

    def __init__(self, sourcedir: Path, **kwargs: Any) -> None:
        super().__init__(sourcedir, verbose=False, **kwargs)
        self.reported: list[tuple[str, str]] = []

    def _report_send_file(self, gateway: Any, modified_rel_path: str) -> None:
        self.reported.append((gateway.id, modified_rel_path))


class Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, int]] = []

    def __call__(self, gateway_id: str, relpath: str, sent: int, size: int) -> None:
        self.calls.append((gateway_id, relpath, sent, size))

    def sent(self) -> int:
        """Bytes sent: the last ``sent`` of each (gateway, file)."""
        last: dict[tuple[str, str], int] = {}
        for gateway_id, relpath, sent, _ in self.calls:
            last[gateway_id, relpath] = sent
        return sum(last.values())


_opened: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], str):
        _opened.append(args[0])


_audit_installed = False


@pytest.fixture
def opened() -> Iterator[list[str]]:
    """Paths this process opens while the test runs (an audit hook: it sees
    every ``open`` and ``os.open``, whoever makes it)."""
    global _opened, _audit_installed
    if not _audit_installed:
        sys.addaudithook(_audit)
        _audit_installed = True
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    root.mkdir()
    make_tree(root)
    return root


# ------------------------------------------------------------------ async


@pytest.mark.anyio
async def test_tree_arrives_with_modes_and_mtimes(
    group: asyncgw.Group, source: Path, tmp_path: Path
) -> None:
    gateway = await group.makegateway("popen")
    dest = tmp_path / "dest" / "nested"  # made, parents too
    finished: list[str] = []

    async def on_finished() -> None:  # coroutine callbacks are awaited
        finished.append(gateway.id)

    rsync = Counting(source)
    rsync.add_target(gateway, dest, finishedcallback=on_finished)
    await rsync.send()
    assert finished == [gateway.id]
    assert snapshot(dest) == snapshot(source)
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o755
    assert sorted(rel for _, rel in rsync.reported) == [
        "empty",
        "run.sh",
        "sub/a.py",
        "sub/deeper/b.bin",
        "top.txt",
    ]


@pytest.mark.anyio
async def test_unchanged_tree_sends_nothing(
    group: asyncgw.Group, source: Path, tmp_path: Path
) -> None:
    gateway = await group.makegateway("popen")
    dest = tmp_path / "dest"
    first = Counting(source)
    first.add_target(gateway, dest)
    await first.send()
    assert len(first.reported) == 5

    calls: list[tuple[str, int]] = []
    progress = Progress()
    second = Counting(source, callback=lambda command, size, channel: calls.append((command, size)))
    second.add_target(gateway, dest)
    await second.send(progress=progress)
    assert second.reported == []
    assert progress.calls == []
    assert calls == [("list", 0)]
    assert snapshot(dest) == snapshot(source)


@pytest.mark.anyio
async def test_changes_travel_and_only_changed_blocks(
    group: asyncgw.Group, source: Path, tmp_path: Path
) -> None:
    gateway = await group.makegateway("popen")
    dest = tmp_path / "dest"
    big = source / "big.bin"
    content = bytearray(os.urandom(3 * BLOCK_SIZE + 1000))
    big.write_bytes(content)
    set_mtime(big, 1_650_000_000)
    rsync = Counting(source)
    rsync.add_target(gateway, dest)
    progress = Progress()
    await rsync.send(progress=progress)
    # streamed in blocks: one progress call per block
    assert [sent for _, rel, sent, _ in progress.calls if rel == "big.bin"] == [
        BLOCK_SIZE,
        2 * BLOCK_SIZE,
        3 * BLOCK_SIZE,
        3 * BLOCK_SIZE + 1000,
    ]

    content[BLOCK_SIZE + 5] ^= 0xFF  # same size, one block differs
    big.write_bytes(content)
    set_mtime(big, 1_650_000_001)
    (source / "top.txt").write_text("top, longer now")  # size differs
    set_mtime(source / "top.txt", 1_650_000_002)
    (source / "sub" / "a.py").write_text("print('b')\n")  # same size, new content
    set_mtime(source / "sub" / "a.py", 1_650_000_003)
    (source / "sub" / "new").write_text("new")
    rsync.reported.clear()
    progress = Progress()
    rsync.add_target(gateway, dest)
    await rsync.send(progress=progress)
    assert snapshot(dest) == snapshot(source)
    assert sorted(rel for _, rel in rsync.reported) == ["big.bin", "sub/a.py", "sub/new", "top.txt"]
    sizes = {rel: sent for _, rel, sent, _ in progress.calls}
    assert sizes == {"big.bin": BLOCK_SIZE, "sub/a.py": 11, "sub/new": 3, "top.txt": 15}


@pytest.mark.anyio
async def test_same_content_new_mtime_sends_nothing_but_the_mtime(
    group: asyncgw.Group, source: Path, tmp_path: Path
) -> None:
    gateway = await group.makegateway("popen")
    dest = tmp_path / "dest"
    rsync = Counting(source)
    rsync.add_target(gateway, dest)
    await rsync.send()
    set_mtime(source / "sub" / "deeper" / "b.bin", 1_700_000_000)
    (source / "top.txt").chmod(0o600)

    rsync.reported.clear()
    progress = Progress()
    rsync.add_target(gateway, dest)
    await rsync.send(progress=progress)
    assert rsync.reported == []
    assert progress.calls == []
    assert (dest / "sub" / "deeper" / "b.bin").stat().st_mtime_ns == 1_700_000_000 * 10**9
    assert stat.S_IMODE((dest / "top.txt").stat().st_mode) == 0o600
    assert snapshot(dest) == snapshot(source)


@pytest.mark.anyio
@pytest.mark.parametrize("delete", [False, True])
async def test_deletions(group: asyncgw.Group, source: Path, tmp_path: Path, delete: bool) -> None:
    gateway = await group.makegateway("popen")
    dest = tmp_path / "dest"
    rsync = Counting(source)
    rsync.add_target(gateway, dest)
    await rsync.send()
    (dest / "extra").write_text("only on the target")
    (dest / "sub" / "extradir" / "inner").mkdir(parents=True)
    (dest / "sub" / "extradir" / "inner" / "f").write_text("x")
    (source / "top.txt").unlink()
    for path in (source / "sub" / "deeper").iterdir():
        path.unlink()
    (source / "sub" / "deeper").rmdir()

    rsync.add_target(gateway, dest, delete=delete)
    await rsync.send()
    left = set(snapshot(dest))
    gone = {"extra", "top.txt", "sub/deeper", "sub/deeper/b.bin", "sub/extradir"}
    if delete:
        assert left == set(snapshot(source))
        assert not left & gone
    else:
        assert gone <= left
        assert set(snapshot(source)) <= left


@pytest.mark.anyio
async def test_type_changes_replace_what_is_there(
    group: asyncgw.Group, source: Path, tmp_path: Path
) -> None:
    gateway = await group.makegateway("popen")
    dest = tmp_path / "dest"
    rsync = Counting(source)
    rsync.add_target(gateway, dest)
    await rsync.send()
    (source / "top.txt").unlink()
    (source / "top.txt").mkdir()  # a file becomes a directory
    (source / "top.txt" / "inside").write_text("in")
    (source / "run.sh").unlink()
    (source / "run.sh").symlink_to("top.txt/inside")  # a file becomes a link
    for path in (source / "sub" / "deeper").iterdir():
        path.unlink()
    (source / "sub" / "deeper").rmdir()
    (source / "sub" / "deeper").write_text("now a file")  # a directory becomes a file

    rsync.add_target(gateway, dest)
    await rsync.send()
    assert snapshot(dest) == snapshot(source)


@pytest.mark.anyio
async def test_symlinks(group: asyncgw.Group, source: Path, tmp_path: Path) -> None:
    gateway = await group.makegateway("popen")
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    outside.write_text("elsewhere")
    (source / "rel").symlink_to("sub/a.py")
    (source / "sub" / "up").symlink_to("../top.txt")
    (source / "abs_in").symlink_to(source / "sub" / "deeper")
    (source / "abs_out").symlink_to(outside)
    (source / "dangling").symlink_to("no/such/file")
    (source / "abs_dangling").symlink_to(tmp_path / "missing")

    rsync = Counting(source)
    rsync.add_target(gateway, dest)
    await rsync.send()
    assert os.readlink(dest / "rel") == "sub/a.py"
    assert os.readlink(dest / "sub" / "up") == "../top.txt"
    assert os.readlink(dest / "abs_in") == str(dest / "sub" / "deeper")  # rebased
    assert os.readlink(dest / "abs_out") == str(outside)
    assert os.readlink(dest / "dangling") == "no/such/file"
    assert os.readlink(dest / "abs_dangling") == str(tmp_path / "missing")
    assert (dest / "abs_in" / "b.bin").read_bytes() == (source / "sub/deeper/b.bin").read_bytes()

    # a link retargeted is replaced; a link in place of a directory too
    (source / "rel").unlink()
    (source / "rel").symlink_to("top.txt")
    (dest / "dangling").unlink()
    (dest / "dangling").mkdir()
    rsync.reported.clear()
    rsync.add_target(gateway, dest)
    await rsync.send()
    assert os.readlink(dest / "rel") == "top.txt"
    assert os.readlink(dest / "dangling") == "no/such/file"
    assert rsync.reported == []  # links carry no contents
    assert snapshot(dest) == {**snapshot(source), "abs_in": ("l", str(dest / "sub" / "deeper"))}


@pytest.mark.anyio
async def test_read_only_files_are_replaceable(group: asyncgw.Group, tmp_path: Path) -> None:
    gateway = await group.makegateway("popen")
    source, dest = tmp_path / "source", tmp_path / "dest"
    source.mkdir()
    locked = source / "locked.txt"
    locked.write_text("version 1")
    set_mtime(locked, 1_600_000_000)
    locked.chmod(0o444)
    for _ in range(2):  # twice unchanged, then changed
        rsync = Counting(source)
        rsync.add_target(gateway, dest)
        await rsync.send()
        assert stat.S_IMODE((dest / "locked.txt").stat().st_mode) == 0o444
        assert (dest / "locked.txt").read_text() == "version 1"
    assert rsync.reported == []

    locked.chmod(0o644)
    locked.write_text("version 2!")
    locked.chmod(0o444)
    set_mtime(locked, 1_600_000_001)
    rsync = Counting(source)
    rsync.add_target(gateway, dest)
    await rsync.send()
    assert rsync.reported == [(gateway.id, "locked.txt")]
    assert (dest / "locked.txt").read_text() == "version 2!"
    assert stat.S_IMODE((dest / "locked.txt").stat().st_mode) == 0o444
    assert not [p for p in dest.iterdir() if p.name.startswith(".rsync-")]  # no temporaries


@pytest.mark.anyio
async def test_two_targets_each_file_read_once(
    group: asyncgw.Group, source: Path, tmp_path: Path, opened: list[str]
) -> None:
    first = await group.makegateway("popen")
    second = await group.makegateway("popen")
    dest1, dest2 = tmp_path / "dest1", tmp_path / "dest2"
    (dest2 / "sub").mkdir(parents=True)
    (dest2 / "sub" / "a.py").write_text("print('x')\n")  # same size, other mtime
    rsync = Counting(source)
    rsync.add_target(first, dest1)
    rsync.add_target(second, dest2)
    progress = Progress()
    await rsync.send(progress=progress)
    read = sorted(path for path in opened if path.startswith(str(source)))
    assert read == [str(path) for path in source_files(source)]
    assert snapshot(dest1) == snapshot(source) == snapshot(dest2)
    assert {gateway_id for gateway_id, _ in rsync.reported} == {first.id, second.id}
    assert len(rsync.reported) == 10
    assert {gateway_id for gateway_id, *_ in progress.calls} == {first.id, second.id}


@pytest.mark.anyio
async def test_filter_leaves_out_and_delete_removes_what_it_leaves_out(
    group: asyncgw.Group, source: Path, tmp_path: Path
) -> None:
    gateway = await group.makegateway("popen")
    dest = tmp_path / "dest"
    seen: list[str] = []

    class NoPy(Counting):
        def filter(self, path: str) -> bool:
            seen.append(path)
            assert threading.current_thread() is not threading.main_thread()
            return not path.endswith((".py", "deeper"))

    (dest / "sub").mkdir(parents=True)
    (dest / "sub" / "a.py").write_text("stale")
    rsync = NoPy(source)
    rsync.add_target(gateway, dest, delete=True)
    await rsync.send()
    assert str(source) not in seen  # the top is not filtered
    assert str(source / "sub" / "a.py") in seen
    assert str(source / "sub" / "deeper" / "b.bin") not in seen  # not descended into
    assert set(snapshot(dest)) == {"empty", "run.sh", "sub", "top.txt"}


@pytest.mark.anyio
async def test_send_without_targets(source: Path) -> None:
    rsync = RSync(source)
    with pytest.raises(OSError, match="no targets"):
        await rsync.send()
    assert await rsync.send(raises=False) is None  # type: ignore[func-returns-value]


@pytest.mark.anyio
async def test_a_failed_target_does_not_stop_the_others(
    group: asyncgw.Group, source: Path, tmp_path: Path
) -> None:
    good = await group.makegateway("popen")
    bad = await group.makegateway("popen")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    finished: list[str] = []
    rsync = Counting(source)
    rsync.add_target(bad, blocker / "dest", finishedcallback=lambda: finished.append("bad"))
    rsync.add_target(good, tmp_path / "dest", finishedcallback=lambda: finished.append("good"))
    with pytest.raises(asyncgw.RemoteError, match="NotADirectoryError"):
        await rsync.send()
    assert finished == ["good"]
    assert snapshot(tmp_path / "dest") == snapshot(source)


@pytest.mark.anyio
async def test_a_raising_hook_stops_and_leaves_no_partial_file(
    group: asyncgw.Group, tmp_path: Path
) -> None:
    gateway = await group.makegateway("popen")
    source, dest = tmp_path / "source", tmp_path / "dest"
    source.mkdir()
    (source / "big").write_bytes(os.urandom(4 * BLOCK_SIZE))

    def stop(gateway_id: str, relpath: str, sent: int, size: int) -> None:
        raise RuntimeError(f"stop at {sent}")

    rsync = RSync(source, verbose=False)
    rsync.add_target(gateway, dest)
    with pytest.raises(RuntimeError, match=f"stop at {BLOCK_SIZE}$"):
        await rsync.send(progress=stop)
    await wait_idle(gateway)
    assert list(dest.iterdir()) == []  # neither the file nor its half-written temporary


async def wait_idle(gateway: asyncgw.Gateway, timeout: float = 10.0) -> None:
    """Wait until the gateway runs no remote code."""
    async with asyncio.timeout(timeout):
        while (await gateway.remote_status()).numexecuting:  # noqa: ASYNC110 - remote state
            await asyncio.sleep(0.01)


@pytest.mark.anyio
@pytest.mark.python("3.9")  # skips, or fails in CI, where no 3.9 is found
async def test_receiver_runs_on_python39(
    group: asyncgw.Group, source: Path, tmp_path: Path
) -> None:
    gateway = await group.makegateway(f"popen//python={PYTHON39}")
    dest = tmp_path / "dest"
    (source / "link").symlink_to("top.txt")
    for _ in range(2):
        rsync = Counting(source)
        rsync.add_target(gateway, dest, delete=True)
        await rsync.send()
    assert rsync.reported == []
    assert snapshot(dest) == snapshot(source)


# ------------------------------------------------------------------ blocking


@pytest.fixture
def sync_group() -> Iterator[asyncgw.sync.Group]:
    group = asyncgw.sync.Group()
    try:
        yield group
    finally:
        group.terminate(timeout=2.0)


def test_blocking_twin_calls_hooks_with_facade_objects_off_the_loop(
    sync_group: asyncgw.sync.Group, source: Path, tmp_path: Path
) -> None:
    first = sync_group.makegateway("popen")
    second = sync_group.makegateway("popen")
    events: list[tuple[str, Any]] = []

    def off_loop(what: str, value: Any) -> None:
        assert not loop_thread.in_loop_thread(), what
        events.append((what, value))

    class Recording(BlockingRSync):
        def filter(self, path: str) -> bool:
            off_loop("filter", path)
            return True

        def _report_send_file(self, gateway: Any, modified_rel_path: str) -> None:
            assert isinstance(gateway, asyncgw.sync.Gateway)
            off_loop("report", (gateway.id, modified_rel_path))

    def callback(command: str, size: int, channel: Any) -> None:
        assert isinstance(channel, asyncgw.sync.Channel)
        off_loop(command, size)

    rsync = Recording(source, callback=callback)
    rsync.add_target(first, tmp_path / "dest1", finishedcallback=lambda: off_loop("done", 1))
    rsync.add_target(second, tmp_path / "dest2", finishedcallback=lambda: off_loop("done", 2))
    progress = Progress()

    def checked_progress(*args: Any) -> None:
        off_loop("progress", args)
        progress(*args)

    rsync.send(progress=checked_progress)
    assert snapshot(tmp_path / "dest1") == snapshot(source) == snapshot(tmp_path / "dest2")
    reports = sorted(value for what, value in events if what == "report")
    files = ["empty", "run.sh", "sub/a.py", "sub/deeper/b.bin", "top.txt"]
    assert reports == sorted((gw.id, rel) for gw in (first, second) for rel in files)
    total = sum(path.stat().st_size for path in source_files(source))
    assert [value for what, value in events if what == "list"] == [total, total]
    assert sorted(value for what, value in events if what == "done") == [1, 2]
    assert progress.sent() == 2 * total
    with pytest.raises(OSError, match="no targets"):
        rsync.send()
    assert rsync.send(raises=False) is None  # type: ignore[func-returns-value]

    # unchanged: nothing travels
    events.clear()
    rsync.add_target(first, tmp_path / "dest1")
    rsync.send()
    assert [what for what, _ in events if what in ("report", "progress", "ack")] == []


def test_blocking_twin_default_report_prints(
    sync_group: asyncgw.sync.Group,
    source: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gateway = sync_group.makegateway("popen")
    rsync = BlockingRSync(source)
    rsync.add_target(gateway, tmp_path / "dest")
    rsync.send()
    assert "<= sub/a.py" in capsys.readouterr().out
    quiet = BlockingRSync(source, verbose=False)
    (source / "top.txt").write_text("changed")
    quiet.add_target(gateway, tmp_path / "dest")
    quiet.send()
    assert capsys.readouterr().out == ""
    assert (tmp_path / "dest" / "top.txt").read_text() == "changed"


def test_xdist_style_subclass(tmp_path: Path, source: Path) -> None:
    """pytest-xdist's HostRSync, as it is written there."""
    import fnmatch
    import re

    PathLike = str | os.PathLike[str]  # noqa: N806 - as xdist spells it

    class HostRSync(BlockingRSync):
        printed: list[str]  # for this test: what _report_send_file printed

        def __init__(
            self,
            sourcedir: PathLike,
            *,
            ignores: list[PathLike] | None = None,
            verbose: bool = True,
        ) -> None:
            if ignores is None:
                ignores = []
            self._ignores = [re.compile(fnmatch.translate(os.fspath(x))) for x in ignores]
            super().__init__(sourcedir=Path(sourcedir), verbose=verbose)

        def filter(self, path: PathLike) -> bool:
            path = Path(path)
            for cre in self._ignores:  # noqa: SIM110 - as xdist writes it
                if cre.match(path.name) or cre.match(str(path)):
                    return False
            else:
                return True

        def add_target_host(
            self, gateway: asyncgw.sync.Gateway, finished: Callable[[], None] | None = None
        ) -> None:
            remotepath = os.path.basename(self._sourcedir)
            super().add_target(gateway, remotepath, finishedcallback=finished, delete=True)

        def _report_send_file(self, gateway: asyncgw.sync.Gateway, modified_rel_path: str) -> None:
            if self._verbose > 0:
                path = os.path.basename(self._sourcedir) + "/" + modified_rel_path
                remotepath = gateway.spec.chdir
                print(f"{gateway.spec}:{remotepath} <= {path}")
                self.printed.append(path)

    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "source").mkdir()
    (workdir / "source" / "stale.pyc").write_text("stale")  # ignored: deleted there
    finished: list[bool] = []
    group = asyncgw.sync.Group()
    try:
        gateway = group.makegateway(f"popen//chdir={workdir}")
        rsync = HostRSync(str(source) + os.sep, ignores=["*.py", "deeper"], verbose=True)
        rsync.printed = []
        rsync.add_target_host(gateway, finished=lambda: finished.append(True))
        rsync.send()
    finally:
        group.terminate(timeout=2.0)
    assert finished == [True]
    assert set(snapshot(workdir / "source")) == {"empty", "run.sh", "sub", "top.txt"}
    assert sorted(rsync.printed) == ["source/empty", "source/run.sh", "source/top.txt"]
