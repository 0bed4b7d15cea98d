"""The far side's cache of the worker's compiled modules (see _bootstrap):
written on a miss into a private directory, used on a hit, never taken
from a directory others can reach, never written under dont_write_bytecode,
and a bad file costs only a compile."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from asyncgw import _bootstrap, _wire


def start_worker(cache_home: Path, *, dont_write: bool = False, config: dict | None = None) -> None:
    """Bootstrap a worker with ``cache_home`` as XDG_CACHE_HOME, run one
    piece of code through it, then end it (end of input)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["XDG_CACHE_HOME"] = str(cache_home)
    if dont_write:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    source = "channel.send(6 * 7)"
    with subprocess.Popen(
        [sys.executable, "-c", _bootstrap.LOADER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(_bootstrap.bootstrap_payload({"id": "cache", **(config or {})}))
        proc.stdin.write(
            _wire.encode_frame(_wire.EXEC, 1, _wire.dumps((source, None, None, False)))
        )
        proc.stdin.flush()
        assert proc.stdout.read(len(_wire.MAGIC)) == _wire.MAGIC
        decoder = _wire.FrameDecoder()
        frames: list[tuple] = []
        while not any(f[0] == _wire.DATA for f in frames):
            data = proc.stdout.read1(65536)
            assert data, f"worker ended early after {frames}"
            frames += decoder.feed(data)
        data_frames = [f for f in frames if f[0] == _wire.DATA]
        assert _wire.loads(data_frames[0][2]) == 42
        proc.stdin.close()
        assert proc.wait(60) == 0


def cache_files(cache_home: Path) -> list[Path]:
    directory = cache_home / "asyncgw"
    return sorted(directory.iterdir()) if directory.is_dir() else []


def test_first_start_writes_a_private_cache_the_next_one_reads(tmp_path: Path) -> None:
    start_worker(tmp_path)
    directory = tmp_path / "asyncgw"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    (entry,) = cache_files(tmp_path)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert entry.name.endswith("-" + sys.implementation.cache_tag)
    before = entry.stat()
    start_worker(tmp_path)
    (again,) = cache_files(tmp_path)
    after = again.stat()
    # A hit reads and leaves the file alone (a miss would replace it).
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def written_then_removed(cache_home: Path) -> None:
    """The control: a plain start there writes the cache (then it is removed)."""
    start_worker(cache_home)
    (entry,) = cache_files(cache_home)
    entry.unlink()


def test_a_directory_others_can_reach_is_not_used(tmp_path: Path) -> None:
    written_then_removed(tmp_path)
    (tmp_path / "asyncgw").chmod(0o755)
    start_worker(tmp_path)
    assert cache_files(tmp_path) == []


def test_a_symlinked_directory_is_not_used(tmp_path: Path) -> None:
    written_then_removed(tmp_path)
    (tmp_path / "asyncgw").rename(tmp_path / "elsewhere")
    (tmp_path / "asyncgw").symlink_to(tmp_path / "elsewhere")
    start_worker(tmp_path)
    assert list((tmp_path / "elsewhere").iterdir()) == []


@pytest.mark.parametrize("how", ["environment", "config"])
def test_nothing_is_written_under_dont_write_bytecode(tmp_path: Path, how: str) -> None:
    written_then_removed(tmp_path)
    if how == "environment":
        start_worker(tmp_path, dont_write=True)
    else:
        start_worker(tmp_path, config={"dont_write_bytecode": True})
    assert cache_files(tmp_path) == []


def test_a_bad_cache_file_costs_a_compile_and_is_replaced(tmp_path: Path) -> None:
    start_worker(tmp_path)
    (entry,) = cache_files(tmp_path)
    good = entry.read_bytes()
    entry.write_bytes(b"not marshal at all")
    start_worker(tmp_path)
    (entry,) = cache_files(tmp_path)
    assert entry.read_bytes() == good
