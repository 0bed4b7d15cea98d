"""The ``asyncgw`` command line, run as users run it: ``python -m asyncgw``
in a subprocess, piped, with ``--json``, and on a pseudo-terminal for the
live display and Ctrl-C. Several hosts are this machine (``localhost``,
no SSH) and the session's real sshd under two names (``127.0.0.1:PORT``,
``localhost:PORT``)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from asyncgw import cli

from .sshserver import Keys
from .test_sshd import Sshd, sshd  # noqa: F401 - the session's loopback sshd

#: The keys of each host's object in --json output.
JSON_KEYS = {"host", "exit_code", "stdout", "stderr", "timeouted", "error", "start", "end"}

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def asyncgw(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m asyncgw ARGS``, piped."""
    return subprocess.run(
        [sys.executable, "-m", "asyncgw", *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=cwd,
        env=_env(),
    )


def _env() -> dict[str, str]:
    env = dict(os.environ, COLUMNS="100", LINES="30", TERM="xterm")
    env.pop("NO_COLOR", None)
    return env


def ssh_options(sshd: Sshd) -> list[str]:  # noqa: F811
    return ["-u", "root", "-i", str(sshd.keys.user_key_path), "--known-hosts", "none"]


def hosts(sshd: Sshd) -> str:  # noqa: F811
    """Three places: here, and the sshd under two names."""
    return f"localhost,127.0.0.1:{sshd.port},localhost:{sshd.port}"


class Terminal:
    """``python -m asyncgw ARGS`` on a pseudo-terminal: its output as a
    terminal would see it, read as it comes."""

    def __init__(self, *args: str, argv: list[str] | None = None) -> None:
        master, slave = pty.openpty()
        self.process = subprocess.Popen(
            argv or [sys.executable, "-m", "asyncgw", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=_env(),
            close_fds=True,
        )
        os.close(slave)
        self.master = master
        self.output = b""

    def _read(self, deadline: float) -> bool:
        """Read what comes before ``deadline``; False at the end of output."""
        ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the terminal's last writer is gone
            return False
        self.output += data
        return bool(data)

    def wait_for(self, pattern: str, timeout: float = 30) -> None:
        """Read until ``pattern`` matches the text (escapes stripped)."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text):
            assert time.monotonic() < deadline, f"no {pattern!r} in {self.text!r}"
            assert self._read(deadline), f"ended without {pattern!r}: {self.text!r}"

    def finish(self, timeout: float = 60) -> int:
        """Read to the end; the exit status."""
        deadline = time.monotonic() + timeout
        while self._read(deadline):
            assert time.monotonic() < deadline, f"still running: {self.text!r}"
        os.close(self.master)
        return self.process.wait(timeout)

    @property
    def text(self) -> str:
        return ANSI.sub(b"", self.output).decode("utf-8", "replace").replace("\r", "")


def wait_gone(pids: list[int], cmdline: list[str], timeout: float = 15) -> None:
    """Wait until none of ``pids`` (commands that reported their own pid, so
    ours) still runs ``cmdline``; fail after ``timeout`` (killing those
    that remain). A pid that runs something else was reused: it is gone."""
    assert pids, "no pid reported"

    def running() -> list[psutil.Process]:
        found = []
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                if proc.cmdline() == cmdline and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except psutil.NoSuchProcess:
                continue
        return found

    deadline = time.monotonic() + timeout
    while left := running():
        if time.monotonic() > deadline:
            for proc in left:
                proc.kill()
            pytest.fail(f"still running: {cmdline} {[proc.pid for proc in left]}")
        psutil.wait_procs(left, timeout=0.5)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small tree: two files, one in a subdirectory, one executable."""
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.sh").write_text("#!/bin/sh\necho beta\n")
    (root / "sub" / "b.sh").chmod(0o755)
    return root


def files_of(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mode & 0o777)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# -- the command line itself -------------------------------------------------


def test_help_lists_the_commands_and_examples() -> None:
    result = asyncgw("--help")
    assert result.returncode == 0
    for word in ("run", "put", "get", "exec", "serve", "--json", "--timeout", "examples:"):
        assert word in result.stdout
    result = asyncgw("run", "--help")
    assert result.returncode == 0
    assert "asyncgw run [options] HOSTS -- COMMAND..." in result.stdout
    assert "{{{host}}}" in result.stdout
    result = asyncgw("exec", "--help")
    assert result.returncode == 0 and "channel" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "node[1-", "--", "true"], "bad HOSTS: node set 'node[1-'"),
        (["run", "n[3-1]", "--", "true"], "bad HOSTS"),
        (["run", "localhost", "true"], "missing '--'"),
        (["run", "localhost", "--"], "no command after '--'"),
        (["run", "--bogus", "localhost", "--", "true"], "unrecognized arguments: --bogus"),
        (["run", "-t", "0", "localhost", "--", "true"], "-t/--timeout: must be more than 0"),
        (["frobnicate", "localhost"], "invalid choice: 'frobnicate'"),
        ([], "missing command"),
        (["put", "localhost", "only-one-path"], "needs SRC... and DEST"),
        (["exec", "localhost"], "one of the arguments -c -f is required"),
        (["exec", "localhost", "-f", "/nonexistent/code.py"], "cannot read /nonexistent"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = asyncgw(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_serve_is_still_the_socket_server() -> None:
    result = asyncgw("serve", "--help")
    assert result.returncode == 0
    assert "--secret-file" in result.stdout


def test_the_console_script_runs_main() -> None:
    """``[project.scripts]`` names ``asyncgw.cli:main``; a console script
    runs ``sys.exit(main())``, as here."""
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    module, _, function = pyproject["project"]["scripts"]["asyncgw"].partition(":")
    script = f"import sys; from {module} import {function}; sys.exit({function}())"
    result = subprocess.run(
        [sys.executable, "-c", script, "run", "localhost", "--", "echo", "hi;", "exit", "3"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 3
    assert "\nhi\n" in result.stdout


def test_main_returns_the_exit_status() -> None:
    """The console script's entry point returns the status for sys.exit."""
    assert cli.main(["--json", "run", "localhost", "--", "exit 7"]) == 7


# -- run -----------------------------------------------------------------------


def test_run_locally_without_ssh() -> None:
    result = asyncgw("run", "localhost", "--", "echo on {{{host}}};", "echo oops >&2; exit 3")
    assert result.returncode == 3
    lines = result.stdout.splitlines()
    assert lines[0] == f"{'-' * 16} localhost (1 host) exit 3 {'-' * 16}"
    assert lines[1:4] == ["on localhost", "-------- stderr", "oops"]
    assert lines[-1].startswith("1 host in ") and lines[-1].endswith(
        ": 0 ok, 1 failed (1 non-zero exit)"
    )
    assert result.stderr == ""


def test_run_groups_hosts_with_the_same_result(sshd: Sshd) -> None:  # noqa: F811
    command = "echo {{{host}}} | cut -c1-5; test {{{host}}} = 127.0.0.1 && exit 4; true"
    result = asyncgw("run", *ssh_options(sshd), hosts(sshd), "--", command)
    assert result.returncode == 4, result.stderr
    port = sshd.port
    assert result.stdout.splitlines() == [
        f"{'-' * 16} localhost,localhost:{port} (2 hosts) exit 0 {'-' * 16}",
        "local",
        f"{'-' * 16} 127.0.0.1:{port} (1 host) exit 4 {'-' * 16}",
        "127.0",
        result.stdout.splitlines()[-1],
    ]
    assert ": 2 ok, 1 failed (1 non-zero exit)" in result.stdout.splitlines()[-1]


def test_run_json_has_one_object_per_host(sshd: Sshd) -> None:  # noqa: F811
    started = time.time()
    result = asyncgw(
        "run", "--json", *ssh_options(sshd), "--connect-timeout", "10",
        f"{hosts(sshd)},127.0.0.1:1", "--", "echo {{{host}}}; echo e >&2; exit 5",
    )  # fmt: skip
    assert result.returncode == 255  # a host could not be reached
    report = json.loads(result.stdout)
    assert [entry["host"] for entry in report] == [
        "localhost", f"127.0.0.1:{sshd.port}", f"localhost:{sshd.port}", "127.0.0.1:1",
    ]  # fmt: skip
    for entry in report:
        assert set(entry) == JSON_KEYS
        assert started <= entry["start"] <= entry["end"] <= time.time()
    for entry, address in zip(report[:3], ["localhost", "127.0.0.1", "localhost"], strict=True):
        assert entry["exit_code"] == 5
        assert entry["stdout"] == f"{address}\n"
        assert entry["stderr"] == "e\n"
        assert entry["error"] is None and entry["timeouted"] is False
    unreachable = report[3]
    assert unreachable["exit_code"] is None
    assert unreachable["error"].startswith("HostNotFound: cannot connect to root@127.0.0.1:1")


def test_timeout_stops_the_commands(sshd: Sshd) -> None:  # noqa: F811
    started = time.time()
    result = asyncgw(
        "run", "--json", "-t", "1", *ssh_options(sshd), f"localhost,127.0.0.1:{sshd.port}",
        "--", "echo before $$; exec sleep 31",
    )  # fmt: skip
    assert result.returncode == 124
    assert time.time() - started < 20
    report = json.loads(result.stdout)
    assert [entry["timeouted"] for entry in report] == [True, True]
    outputs = [entry["stdout"] for entry in report]
    assert all(re.fullmatch(r"before \d+\n", output) for output in outputs), outputs
    wait_gone([int(output.split()[1]) for output in outputs], ["sleep", "31"])


def test_timeout_in_the_summary() -> None:
    result = asyncgw("run", "-t", "0.5", "localhost", "--", "sleep 32")
    assert result.returncode == 124
    assert "localhost (1 host) timed out after 0.5 s" in result.stdout
    assert "(1 timed out)" in result.stdout


def test_unreachable_and_refused_host_keys(sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {Keys.generate_public()}\n")
    result = asyncgw(
        "run", "-u", "root", "-i", str(sshd.keys.user_key_path), "--known-hosts", str(wrong),
        f"127.0.0.1:{sshd.port},127.0.0.1:1", "--", "true",
    )  # fmt: skip
    assert result.returncode == 255
    assert "127.0.0.1:1 (1 host) unreachable" in result.stdout
    assert f"127.0.0.1:{sshd.port} (1 host) host key not accepted" in result.stdout
    assert "HostKeyError" in result.stdout and "HostNotFound" in result.stdout
    assert ": 0 ok, 2 failed (2 error)" in result.stdout


def test_a_known_hosts_file_and_the_port_option(sshd: Sshd) -> None:  # noqa: F811
    known = sshd.keys.known_hosts(sshd.port, "cli-known")
    result = asyncgw(
        "run", "-u", "root", "-i", str(sshd.keys.user_key_path), "--known-hosts", str(known),
        "-p", str(sshd.port), "127.0.0.1", "--", "echo", "via", "ssh",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert "127.0.0.1 (1 host) exit 0" in result.stdout
    assert "\nvia ssh\n" in result.stdout


def test_through_a_jump_host(sshd: Sshd) -> None:  # noqa: F811
    before = sshd.accepted()
    result = asyncgw(
        "run", *ssh_options(sshd), "-J", f"root@127.0.0.1:{sshd.port}",
        f"127.0.0.1:{sshd.port}", "--", "echo jumped",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert "\njumped\n" in result.stdout
    assert sshd.accepted() - before == 2  # the jump host, then the host through it


# -- put and get ---------------------------------------------------------------


def test_put_and_get_a_tree_here(tree: Path, tmp_path: Path) -> None:
    put = asyncgw("put", "localhost", str(tree), str(tmp_path / "there"), "--mkdir")
    assert put.returncode == 0, put.stdout
    assert "localhost (1 host) ok, 26 B copied" in put.stdout
    assert files_of(tmp_path / "there" / "tree") == files_of(tree)
    get = asyncgw("get", "localhost", str(tmp_path / "there" / "tree"), str(tmp_path / "back"))
    assert get.returncode == 0, get.stdout
    assert files_of(tmp_path / "back") == files_of(tree)


def test_put_and_get_on_several_hosts(sshd: Sshd, tree: Path, tmp_path: Path) -> None:  # noqa: F811
    places = f"localhost,127.0.0.1:{sshd.port}"
    remote = tmp_path / "remote-{{{host}}}"
    put = asyncgw("put", "--json", *ssh_options(sshd), places, str(tree), str(remote), "--mkdir")
    assert put.returncode == 0, put.stdout
    assert [entry["error"] for entry in json.loads(put.stdout)] == [None, None]
    for address in ("localhost", "127.0.0.1"):
        assert files_of(tmp_path / f"remote-{address}" / "tree") == files_of(tree)
    get = asyncgw("get", *ssh_options(sshd), places, str(tmp_path / "remote-{{{host}}}" / "tree"),
                  str(tmp_path / "back"))  # fmt: skip
    assert get.returncode == 0, get.stdout
    assert f"127.0.0.1:{sshd.port},localhost (2 hosts) ok" in get.stdout
    for label in ("localhost", f"127.0.0.1:{sshd.port}"):  # each host in DEST/HOST/
        assert files_of(tmp_path / "back" / label / "tree") == files_of(tree)


def test_get_of_a_missing_file_is_an_error(tmp_path: Path) -> None:
    result = asyncgw("get", "localhost", str(tmp_path / "missing"), str(tmp_path / "back"))
    assert result.returncode == 255
    assert "FileNotFoundError" in result.stdout


def test_put_into_a_missing_dir_suggests_mkdir(tree: Path, tmp_path: Path) -> None:
    result = asyncgw("put", "localhost", str(tree / "a.txt"), f"{tmp_path / 'missing'}/")
    assert result.returncode == 255, result.stdout
    assert f"is '{tmp_path / 'missing'}/' missing there? add --mkdir" in result.stdout
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("several", [False, True], ids=["one host", "two hosts"])
def test_get_into_a_missing_dir_suggests_mkdir_for_one_host_and_many(
    sshd: Sshd,  # noqa: F811
    tree: Path,
    tmp_path: Path,
    several: bool,
) -> None:
    """As scp: a missing DEST/ is refused before any host is reached, with
    a hint at --mkdir, whether one host or several are named."""
    places = f"localhost,127.0.0.1:{sshd.port}" if several else "localhost"
    dest = f"{tmp_path / 'missing'}/"
    result = asyncgw("get", *ssh_options(sshd), places, str(tree / "a.txt"), dest)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{dest!r} does not exist here (add --mkdir to create it)" in result.stderr
    assert not (tmp_path / "missing").exists()
    result = asyncgw("get", *ssh_options(sshd), places, str(tree / "a.txt"), dest, "--mkdir")
    assert result.returncode == 0, result.stdout + result.stderr
    got = tmp_path / "missing" / ("localhost" if several else "") / "a.txt"
    assert got.read_text() == (tree / "a.txt").read_text()


# -- exec ----------------------------------------------------------------------


def test_exec_prints_what_the_code_sends(sshd: Sshd) -> None:  # noqa: F811
    code = "import socket\nchannel.send('hello')\nchannel.send([1, 2])\n"
    result = asyncgw(
        "exec", *ssh_options(sshd), "--python", sys.executable,
        f"localhost,127.0.0.1:{sshd.port}", "-c", code,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    for label in ("localhost", f"127.0.0.1:{sshd.port}"):
        assert lines.index(f"{label}: hello") < lines.index(f"{label}: [1, 2]")
    assert f"{'-' * 16} 127.0.0.1:{sshd.port},localhost (2 hosts) exit 0 {'-' * 16}" in lines
    assert lines[-1].endswith(": 2 ok")


def test_exec_shows_the_remote_traceback(tmp_path: Path) -> None:
    script = tmp_path / "code.py"
    script.write_text("channel.send('first')\nraise ValueError('boom')\n")
    result = asyncgw("exec", "localhost", "-f", str(script))
    assert result.returncode == 1
    assert "localhost: first\n" in result.stdout
    assert "localhost (1 host) exit 1" in result.stdout
    assert "ValueError: boom" in result.stdout


def test_exec_json_and_timeout() -> None:
    result = asyncgw(
        "exec",
        "--json",
        "-t",
        "1",
        "localhost",
        "-c",
        "import time\nchannel.send(1)\ntime.sleep(30)",
    )
    assert result.returncode == 124
    [entry] = json.loads(result.stdout)
    assert set(entry) == JSON_KEYS
    assert entry["timeouted"] is True and entry["stdout"] == "1\n"


# -- on a terminal -------------------------------------------------------------


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    made: list[Terminal] = []
    yield made
    for terminal in made:  # a failed test's process must not outlive it
        if terminal.process.poll() is None:
            terminal.process.kill()
            terminal.process.wait()


def test_live_progress_then_colored_summary(terminals: list[Terminal], tmp_path: Path) -> None:
    flag = tmp_path / "go-on"
    terminal = Terminal(
        "run", "localhost", "--", f"echo tick; while [ ! -e {flag} ]; do sleep 0.05; done"
    )
    terminals.append(terminal)
    # The live view shows the running host and its last line...
    terminal.wait_for(r"0/1 done.*1 running.*\n *localhost +tick")
    flag.touch()
    assert terminal.finish() == 0
    assert b"\x1b[?25l" in terminal.output  # ... hides the cursor while it runs...
    assert b"\x1b[2K" in terminal.output  # ... redraws its lines in place...
    assert b"\x1b[32m" in terminal.output  # ... and the summary is green: all went well.
    text = terminal.text
    assert "localhost (1 host) exit 0 ─" in text
    assert "\ntick\n" in text
    assert text.rstrip().endswith(": 1 ok")


def test_no_progress_keeps_colors_without_live_view(terminals: list[Terminal]) -> None:
    terminal = Terminal("run", "--no-progress", "localhost", "--", "exit 1")
    terminals.append(terminal)
    assert terminal.finish() == 1
    assert b"\x1b[?25l" not in terminal.output
    assert b"\x1b[31m" in terminal.output  # red
    assert "localhost (1 host) exit 1" in terminal.text


def test_without_rich_a_terminal_gets_plain_text(terminals: list[Terminal]) -> None:
    hide_rich = (
        "import runpy, sys; sys.modules['rich'] = None; "
        "sys.argv = ['asyncgw', 'run', 'localhost', '--', 'echo plain']; "
        "runpy.run_module('asyncgw', run_name='__main__')"
    )
    terminal = Terminal(argv=[sys.executable, "-c", hide_rich])
    terminals.append(terminal)
    assert terminal.finish() == 0
    assert b"\x1b[" not in terminal.output
    assert f"{'-' * 16} localhost (1 host) exit 0 {'-' * 16}\nplain\n" in terminal.text


def test_ctrl_c_stops_the_commands_and_prints_what_arrived(
    sshd: Sshd,  # noqa: F811
    terminals: list[Terminal],
) -> None:
    terminal = Terminal(
        "run", *ssh_options(sshd), f"localhost,127.0.0.1:{sshd.port}",
        "--", "echo started {{{host}}} $$; exec sleep 60",
    )  # fmt: skip
    terminals.append(terminal)
    terminal.wait_for(r"localhost +started localhost")
    terminal.wait_for(rf"127\.0\.0\.1:{sshd.port} +started 127\.0\.0\.1")
    terminal.process.send_signal(signal.SIGINT)
    assert terminal.finish() == 130
    text = terminal.text
    assert "SIGINT: stopping the remote commands" in text
    summary = text[text.index("SIGINT") :]
    assert "localhost (1 host) interrupted" in summary
    assert summary.rstrip().endswith("- interrupted")
    started = dict(re.findall(r"\nstarted (\S+) (\d+)\n", summary))
    assert sorted(started) == ["127.0.0.1", "localhost"], summary
    pids = [int(pid) for pid in started.values()]
    wait_gone(pids, ["sleep", "60"])


def wait_for_child(pid: int, cmdline: list[str], timeout: float = 30) -> int:
    """Wait until a descendant of ``pid`` runs ``cmdline``, and return its
    pid; fail if ``pid`` ends first or after ``timeout`` seconds."""
    parent = psutil.Process(pid)
    deadline = time.monotonic() + timeout
    while True:
        for child in parent.children(recursive=True):
            try:
                if child.cmdline() == cmdline:
                    return child.pid
            except psutil.NoSuchProcess:
                continue
        assert time.monotonic() < deadline, f"no {cmdline} under {pid}"
        try:
            parent.wait(timeout=0.05)
        except psutil.TimeoutExpired:
            continue
        pytest.fail(f"{pid} ended before running {cmdline}")


def test_ctrl_c_piped() -> None:
    """Piped, nothing shows before the summary: wait for the command to run.
    (Its output is not checked: the signal may come before the CLI has read
    it; on a terminal, the test above waits until it has arrived.)"""
    process = subprocess.Popen(
        [sys.executable, "-m", "asyncgw", "run", "localhost", "--", "echo started; exec sleep 61"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        sleeper = wait_for_child(process.pid, ["sleep", "61"])
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130
    assert "localhost (1 host) interrupted" in out
    assert "SIGINT: stopping the remote commands" in err
    wait_gone([sleeper], ["sleep", "61"])
