"""pytest-xdist, unmodified, on asyncgw gateways (``-p asyncgw.xdist``).

Each test runs pytest in a subprocess on a generated project and compares
what it reports with a run without xdist. A test in the project checks,
inside the worker, that ``import execnet`` gave asyncgw's worker-side
module, so a silent fall-back to the real execnet would fail here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .test_sshd import Sshd, sshd  # noqa: F401 - the session's loopback sshd

pytest.importorskip("xdist")

pytestmark = pytest.mark.slow

MODULE = """\
import pytest

@pytest.mark.parametrize("n", range(10))
def test_ok(n):
    assert n >= 0

def test_fails():
    assert 0

@pytest.mark.skip
def test_skipped():
    pass
"""

WHERE = """\
import sys

def test_execnet_is_asyncgw():
    module = sys.modules["execnet"]
    # the worker's own execnet, not the real one, nor asyncgw.sync
    assert "asyncgw worker" in module.__doc__, module
"""


FORKED = """\
import os
import psutil

def test_forked_from_a_fork_server():
    # parent: the group's fork server (a bare interpreter); grandparent: pytest
    parent = psutil.Process(os.getppid())
    assert "pytest" not in " ".join(parent.cmdline())
    assert "pytest" in " ".join(parent.parent().cmdline())
"""


AHEAD = """\
import os
import sys

from _pytest.assertion.rewrite import AssertionRewritingHook, assertstate_key

def test_plugins_imported_ahead(request):
    loader = sys.modules["xdist.plugin"].__loader__
    state = request.config.stash.get(assertstate_key, None)
    own = state.hook if state is not None else None
    # Rewritten by a hook of the fork server's (not this worker's), or
    # imported by this worker's pytest as it would be without asyncgw.
    ahead = isinstance(loader, AssertionRewritingHook) and loader is not own
    assert ahead == (os.environ["EXPECT_AHEAD"] == "1"), loader
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for index in range(4):
        (tmp_path / f"test_m{index}.py").write_text(MODULE)
    (tmp_path / "test_where.py").write_text(WHERE)
    return tmp_path


def run_pytest(
    directory: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[dict[str, int], str]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    result = subprocess.run(
        command,
        cwd=directory,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    counts = {
        kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)
    }
    return counts, output


def expected_counts(directory: Path, *tests: str) -> dict[str, int]:
    """What pytest without xdist reports (the WHERE test fails there: no worker)."""
    counts, output = run_pytest(directory, "-p", "no:xdist", *tests)
    assert counts, output
    return counts


def test_same_outcomes_as_without_xdist(project: Path) -> None:
    expected = expected_counts(project, "--ignore=test_where.py")
    (project / "test_forked.py").write_text(FORKED)
    counts, output = run_pytest(project, "-p", "asyncgw.xdist", "-n", "2")
    assert counts == {**expected, "passed": expected["passed"] + 2}, output
    assert "bringing up nodes" in output
    # Nothing pytest rewrites was imported ahead of it in the workers.
    assert "PytestAssertRewriteWarning" not in output, output


@pytest.mark.parametrize(
    ("args", "ahead"),
    [((), True), (("--assert=plain",), False), (("-p", "no:timeout"), False)],
    ids=["rewrite", "plain", "blocked"],
)
def test_installed_plugins_are_imported_ahead_as_pytest_would(
    project: Path, args: tuple[str, ...], ahead: bool
) -> None:
    # The fork server imports the pytest11 plugins through pytest's rewriting
    # hook, only when the workers' pytest would import all of them so.
    (project / "test_ahead.py").write_text(AHEAD)
    counts, output = run_pytest(
        project, "-p", "asyncgw.xdist", "-n", "2", *args, "test_ahead.py",
        env={"EXPECT_AHEAD": "1" if ahead else "0"},
    )  # fmt: skip
    assert counts == {"passed": 1}, output
    assert "PytestAssertRewriteWarning" not in output, output


AHEAD_SCRIPT = """\
import json
import os
import sys
import time

import psutil

import asyncgw.sync as execnet
import asyncgw.xdist as plugin

asked = [
    ["-n", "2"], ["-n2"], ["--numprocesses=auto"], ["-p", "asyncgw.xdist", "-n", "8"],
    ["-n", "0"], ["-n", "1"], [], ["-n", "2", "--tx", "popen"], ["-n", "2", "-p", "no:xdist"],
    ["--", "-n", "2"], ["-n", "2", "--help"],
]
several = [plugin.several_popen_workers(args) for args in asked]
preload = ["json"]
plugin.start_ahead(preload)
deadline = time.monotonic() + 30  # its start is asynchronous: wait for it
while not (ahead := [child.pid for child in psutil.Process().children()]):
    assert time.monotonic() < deadline, "no fork server started ahead"
    time.sleep(0.01)
group = execnet.Group()
group._group.preload = preload if sys.argv[1] == "same" else ["json", "csv"]
plugin.adopt_ahead(group, group._group.preload)
gateways = group.makegateways(["popen", "popen"])
ppid = "import os; channel.send(os.getppid())"
parents = sorted({gw.remote_exec(ppid).receive() for gw in gateways})
group.terminate(5)
print(json.dumps({"several": several, "ahead": ahead, "parents": parents,
                  "ahead_alive": [pid for pid in ahead if psutil.pid_exists(pid)]}))
"""


@pytest.mark.parametrize("preload", ["same", "other"])
def test_fork_server_started_ahead_is_adopted_if_it_preloads_the_same(
    tmp_path: Path, preload: str
) -> None:
    # pytest_addoption starts it when the command line asks for several
    # workers; the session's group forks from it if it imports the same.
    script = tmp_path / "ahead.py"
    script.write_text(AHEAD_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), preload],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["several"] == [True] * 4 + [False] * 7
    assert len(report["ahead"]) == 1, report
    if preload == "same":
        assert report["parents"] == report["ahead"], report
    else:  # closed; the group started its own
        assert report["ahead_alive"] == [] and report["parents"] != report["ahead"], report


@pytest.mark.parametrize("dist", ["load", "loadscope", "loadfile", "loadgroup", "worksteal"])
def test_distribution_modes(project: Path, dist: str) -> None:
    counts, output = run_pytest(project, "-p", "asyncgw.xdist", "-n", "2", "--dist", dist)
    assert counts == {"passed": 41, "failed": 4, "skipped": 4}, output


def test_each_runs_everything_on_every_worker(project: Path) -> None:
    counts, output = run_pytest(project, "-p", "asyncgw.xdist", "-n", "2", "--dist", "each")
    assert counts == {"passed": 82, "failed": 8, "skipped": 8}, output


def test_plugin_from_addopts_and_environment(project: Path) -> None:
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p asyncgw.xdist\n")
    counts, output = run_pytest(project, "-n", "2", "test_where.py")
    assert counts == {"passed": 1}, output
    (project / "pytest.ini").unlink()
    counts, output = run_pytest(
        project, "-n", "2", "test_where.py", env={"PYTEST_ADDOPTS": "-p asyncgw.xdist"}
    )
    assert counts == {"passed": 1}, output


def test_exitfirst(project: Path) -> None:
    counts, output = run_pytest(project, "-p", "asyncgw.xdist", "-n", "2", "-x")
    assert counts.get("failed", 0) >= 1 and "stopping after" in output.lower(), output
    assert sum(counts.values()) < 49, output


def test_a_crashed_worker_is_replaced(project: Path) -> None:
    # One worker: the tests after the crash run only if it was replaced.
    (project / "test_crash.py").write_text("import os\n\ndef test_crash():\n    os._exit(3)\n")
    counts, output = run_pytest(project, "-p", "asyncgw.xdist", "-n", "1", "--max-worker-restart=1")
    assert "worker 'gw0' crashed while running 'test_crash.py::test_crash'" in output, output
    assert counts == {"passed": 41, "failed": 5, "skipped": 4}, output


def test_proxies_and_via(project: Path) -> None:
    # The hub relays each worker with code that holds a thread for the
    # worker's life: under xdist's default main_thread_only the second one
    # is refused, with execnet as with asyncgw; a thread hub serves both.
    px = "id=hub//popen//execmodel=thread"
    counts, output = run_pytest(
        project, "-p", "asyncgw.xdist", "--px", px, "--tx", "2*popen//via=hub", "--dist", "load"
    )
    assert counts == {"passed": 41, "failed": 4, "skipped": 4}, output


def test_ssh_workers_with_rsync(project: Path, sshd: Sshd) -> None:  # noqa: F811
    # The project travels by --rsyncdir into the workers' chdir on the host.
    tx = sshd.spec("//chdir=" + str(project.parent / "remote-xdist"))
    counts, output = run_pytest(
        project,
        "-p",
        "asyncgw.xdist",
        "--tx",
        f"2*{tx}",
        "--dist",
        "load",
        "--rsyncdir",
        str(project),
        "-W",
        "ignore::DeprecationWarning",
    )
    assert counts == {"passed": 41, "failed": 4, "skipped": 4}, output
    copied = project.parent / "remote-xdist" / project.name
    assert sorted(p.name for p in copied.glob("test_*.py")) == sorted(
        p.name for p in project.glob("test_*.py")
    )


def test_workers_on_another_interpreter(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Another interpreter: a venv that sees this one's packages through a
    # .pth file (pytest; not asyncgw's editable install, whose own .pth is
    # not read there: `-p asyncgw.xdist` meets the worker's stand-in).
    import sysconfig
    import venv

    env_dir = tmp_path_factory.mktemp("other-python")
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site_packages) / "outer.pth").write_text("\n".join(sorted(paths)) + "\n")
    (project / "test_which_python.py").write_text(
        "import os, sys\n\ndef test_python():\n"
        "    assert sys.prefix == os.environ['EXPECTED_PREFIX']\n"
    )
    counts, output = run_pytest(
        project, "-p", "asyncgw.xdist", "--tx", f"2*popen//python={python}", "--dist", "load",
        env={"EXPECTED_PREFIX": str(env_dir)},
    )  # fmt: skip
    assert counts == {"passed": 42, "failed": 4, "skipped": 4}, output
