"""The Python matrix cannot vanish: interpreters are found (pyenv roots, then
``PATH``), each probed for its version; a missing one skips with a reason
here and fails where ``ASYNCGW_REQUIRE_MATRIX`` is set (CI); root-only tests
skip with a reason, or fail where ``ASYNCGW_REQUIRE_ROOT`` is set. Plus a
smoke test of a worker on Python 3.8, older than the 3.9 the README states."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import asyncgw

from . import conftest
from .conftest import SMOKE_PYTHON, find_python, require_python, require_root_netns


def fake_python(path: Path, reports: str) -> Path:
    """A script named like an interpreter that answers the probe with ``reports``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho {reports}\necho "{path}"\n')
    path.chmod(0o755)
    return path


def test_find_python_takes_the_newest_pyenv_release_that_reports_its_version(
    tmp_path: Path,
) -> None:
    root = tmp_path / "pyenv"
    fake_python(root / "versions/3.77.2/bin/python3.77", "3.77")
    newest = fake_python(root / "versions/3.77.10/bin/python3.77", "3.77")
    impostor = fake_python(tmp_path / "bin/python3.77", "3.11")  # misnamed: passed over
    environ = {"PYENV_ROOT": str(root), "HOME": str(tmp_path), "PATH": str(impostor.parent)}
    assert find_python("3.77", environ) == str(newest)
    environ["PYENV_ROOT"] = str(tmp_path / "none")
    assert find_python("3.77", environ) is None
    real = fake_python(tmp_path / "bin2/python3.77", "3.77")
    environ["PATH"] = os.pathsep.join([str(impostor.parent), str(real.parent)])
    assert find_python("3.77", environ) == str(real)


def _run_with_missing_worker(require: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCGW_")}
    if require:
        env["ASYNCGW_REQUIRE_MATRIX"] = "1"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rsf",
            "--worker-python=3.77",
            "tests/test_gateway.py::test_remote_exec_source_round_trip",
        ],
        cwd=Path(__file__).parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_missing_worker_python_skips_with_a_reason_here_and_fails_in_ci() -> None:
    here = _run_with_missing_worker(require=False)
    assert here.returncode == 0, here.stdout + here.stderr
    assert "2 skipped" in here.stdout, here.stdout  # popen-py3.77 and via-py3.77
    assert "no Python 3.77 found" in here.stdout
    ci = _run_with_missing_worker(require=True)
    assert ci.returncode == 1, ci.stdout + ci.stderr
    assert "2 errors" in ci.stdout and "ASYNCGW_REQUIRE_MATRIX is set" in ci.stdout, ci.stdout


def test_the_default_run_keeps_python39_cases_even_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The popen-py3.9 and via-py3.9 cases exist whether or not 3.9 is here
    (they used to drop out of the collection without a word)."""
    ids = conftest.worker_transport_ids(conftest.DEFAULT_WORKER_PYTHONS)
    assert ids == ["popen-py3.9", "via-py3.9"]
    conftest.found_python.cache_clear()
    monkeypatch.setattr(conftest, "find_python", lambda version: None)
    monkeypatch.delenv("ASYNCGW_REQUIRE_MATRIX", raising=False)
    try:
        with pytest.raises(pytest.skip.Exception, match=r"no Python 3\.9 found"):
            conftest.specs_for("popen-py3.9")
        monkeypatch.setenv("ASYNCGW_REQUIRE_MATRIX", "1")
        with pytest.raises(pytest.fail.Exception, match=r"no Python 3\.9 found"):
            conftest.specs_for("via-py3.9")
    finally:
        conftest.found_python.cache_clear()


def test_root_only_tests_skip_with_a_reason_or_fail_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    conftest._netns_problem.cache_clear()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for name in ("ASYNCGW_REQUIRE_ROOT", "ASYNCGW_REQUIRE_SSHD"):
        monkeypatch.delenv(name, raising=False)
    try:
        with pytest.raises(pytest.skip.Exception, match="network namespaces need root"):
            require_root_netns()
        monkeypatch.setenv("ASYNCGW_REQUIRE_ROOT", "1")
        with pytest.raises(pytest.fail.Exception, match="requires root-only tests"):
            require_root_netns()
    finally:
        conftest._netns_problem.cache_clear()


@pytest.mark.anyio
async def test_smoke_worker_on_python38() -> None:
    """3.8 is below the README's 3.9+: not promised, but a worker starts and
    runs code there (skipped where there is no 3.8, even in CI)."""
    python = require_python(SMOKE_PYTHON)
    async with asyncgw.Group() as group:
        gateway = await group.makegateway(f"popen//python={python}")
        assert tuple((await gateway.remote_info()).version_info[:2]) == (3, 8)
        channel = gateway.remote_exec("channel.send(sum(channel.receive()))")
        await channel.send([1, 2, 3])
        assert await channel.receive() == 6
        await group.terminate(timeout=2.0)
