"""``asyncgw map HOSTS MODULE:FUNCTION ARGS-FILE`` through the real entry
point, in a subprocess (issue 20).

Results come one JSON line per input line, in order; a failed line prints
null and is named on stderr with its error, and the exit status is 1; a
bad ARGS-FILE or function is a usage error (2) before anything runs; hosts
that cannot be started give 255; Ctrl-C gives 130. The workers the command
started are gone when it has exited, whatever the outcome.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from .test_sshd import Sshd, sshd  # noqa: F401 - the session's loopback sshd

#: The console script next to this interpreter, as ``pip install`` made it.
ENTRY = Path(sys.executable).with_name("asyncgw")

MODULE = """
def work(x):
    import os
    if x == 3:
        raise ValueError("three is not allowed")
    return {"x": x, "square": x * x, "pid": os.getpid()}


def raw(x):
    return b"bytes are not JSON"


def marker(path):
    open(path, "a").close()
    return path


def hang(directory):
    import os
    import time
    open(os.path.join(directory, str(os.getpid())), "w").close()
    time.sleep(600)
"""


def run_map(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENTRY), "map", *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=cwd,
        input=stdin,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "mapmod.py").write_text(MODULE)
    return tmp_path


def assert_gone(pids: set[int]) -> None:
    processes = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            processes.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(processes, timeout=10)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"workers left running: {[p.pid for p in alive]}"


def test_results_in_order_failures_named_and_workers_gone(workdir: Path) -> None:
    assert ENTRY.exists(), f"no console script at {ENTRY}: pip install -e ."
    (workdir / "args.jsonl").write_text("1\n2\n3\n4\n5\n")
    result = run_map("-n", "2", "localhost", "mapmod:work", "args.jsonl", cwd=workdir)
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 5 and lines[2] is None
    assert [(r["x"], r["square"]) for r in lines if r] == [(1, 1), (2, 4), (4, 16), (5, 25)]
    assert "line 3: ValueError: three is not allowed" in result.stderr
    assert "1 of 5 lines failed" in result.stderr
    assert_gone({r["pid"] for r in lines if r})


def test_all_lines_ok_from_stdin_exits_zero(workdir: Path) -> None:
    result = run_map("localhost,local", "mapmod:work", "-", cwd=workdir, stdin="7\n8\n")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["square"] for line in result.stdout.splitlines()] == [49, 64]


def test_a_result_json_cannot_carry_fails_its_line(workdir: Path) -> None:
    result = run_map("localhost", "mapmod:raw", "-", cwd=workdir, stdin="1\n")
    assert result.returncode == 1
    assert result.stdout == "null\n"
    assert "line 1: the result is not JSON" in result.stderr


@pytest.mark.parametrize(
    "function, lines, message",
    [
        ("mapmod:marker", '"MARK"\nnot json\n', "args.jsonl:2: not JSON"),
        ("mapmod:nothing", '"MARK"\n', "mapmod has no nothing"),
        ("nomodule:work", '"MARK"\n', "cannot import nomodule"),
        ("mapmod", '"MARK"\n', "is not MODULE:FUNCTION"),
    ],
)
def test_bad_input_is_a_usage_error_before_anything_runs(
    workdir: Path, function: str, lines: str, message: str
) -> None:
    mark = workdir / "ran"
    (workdir / "args.jsonl").write_text(lines.replace("MARK", str(mark)))
    result = run_map("localhost", function, "args.jsonl", cwd=workdir)
    assert result.returncode == 2
    assert message in result.stderr and result.stdout == ""
    assert not mark.exists()


def test_an_unusable_key_is_a_usage_error(workdir: Path) -> None:
    result = run_map(
        "-i", str(workdir / "no-such-key"), "127.0.0.1:1", "mapmod:work", "-",
        cwd=workdir, stdin="1\n",
    )  # fmt: skip
    assert result.returncode == 2
    assert "-i " in result.stderr and "no-such-key" in result.stderr


def test_hosts_that_cannot_start_exit_255(workdir: Path) -> None:
    result = run_map(
        "--python", str(workdir / "no-such-python"), "localhost", "mapmod:work", "-",
        cwd=workdir, stdin="1\n",
    )  # fmt: skip
    assert result.returncode == 255
    assert "cannot start the workers" in result.stderr


def test_ctrl_c_stops_the_workers_and_exits_130(workdir: Path) -> None:
    pids = workdir / "pids"
    pids.mkdir()
    process = subprocess.Popen(
        [str(ENTRY), "map", "-n", "2", "--chunksize", "1", "localhost", "mapmod:hang", "-"],
        cwd=workdir,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        process.stdin.write(f"{json.dumps(str(pids))}\n" * 2)  # type: ignore[union-attr]
        process.stdin.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + 60
        while len(os.listdir(pids)) < 2:  # both workers run the function
            assert time.monotonic() < deadline, "the workers never started"
            assert process.poll() is None, process.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.05)
        workers = {int(name) for name in os.listdir(pids)}
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130, process.stderr.read()  # type: ignore[union-attr]
        assert_gone(workers)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]


def test_over_ssh_and_here_in_one_map(workdir: Path, sshd: Sshd) -> None:  # noqa: F811
    (workdir / "args.jsonl").write_text("".join(f"{n}\n" for n in range(1, 9) if n != 3))
    result = run_map(
        "-u", "root", "-i", str(sshd.keys.user_key_path), "--known-hosts", "none",
        "--python", sys.executable, "--chunksize", "1",
        f"localhost,127.0.0.1:{sshd.port}", "mapmod:work", "args.jsonl",
        cwd=workdir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["square"] for r in lines] == [n * n for n in range(1, 9) if n != 3]
    pids = {r["pid"] for r in lines}
    assert len(pids) == 2  # both places took items
    assert_gone(pids)
