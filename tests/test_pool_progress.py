"""``progress=True`` on Pool.map, Pool.starmap and Executor.map (issue 20).

The bar is rich's, drawn on standard error, and ends at the number of
tasks; without rich the call is an ImportError naming the ``cli`` extra,
raised before any task is sent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import asyncgw
import asyncgw.sync

pytestmark = pytest.mark.anyio


def square(x):
    return x * x


def touch(path):
    with open(path, "a") as file:
        file.write("ran\n")
    return path


def add(a, b):
    return a + b


async def test_pool_map_draws_a_bar_to_the_end(capsys: pytest.CaptureFixture[str]) -> None:
    async with asyncgw.Pool(2) as pool:
        assert await pool.map(square, range(300), progress=True) == [x * x for x in range(300)]
        assert await pool.starmap(add, [(1, 2)] * 7, progress=True) == [3] * 7
    err = capsys.readouterr().err
    assert "square" in err and "300/300" in err
    assert "add" in err and "7/7" in err


async def test_a_failed_map_still_ends_its_bar(capsys: pytest.CaptureFixture[str]) -> None:
    async with asyncgw.Pool(1) as pool:
        results = await pool.map(
            square, [1, "x", 3], progress=True, return_exceptions=True, chunksize=1
        )
    assert results[0] == 1 and isinstance(results[1], asyncgw.RemoteError) and results[2] == 9
    assert "3/3" in capsys.readouterr().err


def test_executor_map_draws_a_bar_to_the_end(capsys: pytest.CaptureFixture[str]) -> None:
    with asyncgw.sync.Executor(2) as executor:
        results = list(executor.map(square, range(200), progress=True, chunksize=3))
    assert results == [x * x for x in range(200)]
    err = capsys.readouterr().err
    assert "square" in err and "200/200" in err


@pytest.fixture
def without_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n == "rich" or n.startswith("rich.")]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("rich", "rich.console", "rich.progress"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails


async def test_pool_map_without_rich_names_the_extra_and_runs_nothing(
    without_rich: None, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    async with asyncgw.Pool(1) as pool:
        with pytest.raises(ImportError, match=r"rich.*asyncgw\[cli\]"):
            await pool.map(touch, [str(marker)], progress=True)
        assert await pool.map(square, [4]) == [16]  # the pool goes on
    assert not marker.exists()


def test_executor_map_without_rich_names_the_extra_and_runs_nothing(
    without_rich: None, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    with asyncgw.sync.Executor(1) as executor:
        with pytest.raises(ImportError, match=r"rich.*asyncgw\[cli\]"):
            executor.map(touch, [str(marker)], progress=True)
        assert list(executor.map(square, [5])) == [25]
    assert not marker.exists()
