"""The fleet (execo's model) without SSH: ``Local`` here and ``Remote``
through popen gateways, their processes' fields, stopping (timeout, kill,
cancellation), output (lines, expect, handlers), substitutions, ``Report``,
combined actions, ``Put``/``Get`` through a gateway, and bad inputs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import random
import shlex
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import asyncgw
from asyncgw.fleet import (
    Action,
    Get,
    Host,
    Local,
    ParallelActions,
    Process,
    Put,
    Remote,
    Report,
    SequentialActions,
    get_hosts_list,
    remote_substitute,
)
from asyncgw.fleet.remoteprocess import _HEADED, execable, headed_command

from .conftest import wait_gone

pytestmark = pytest.mark.anyio

#: A command that starts a child of its own, prints the child's pid and
#: waits for it: stopping the command must stop the child too.
WITH_CHILD = "sleep 300 & echo $!; wait"

Make = Callable[..., Action]


@pytest.fixture(params=["local", "gateway"])
async def make(request: pytest.FixtureRequest, group: asyncgw.Group) -> Make:
    """``make(cmd, **kwargs)``: a one-process action running ``cmd`` here
    (``Local``) or through a popen gateway (``Remote``)."""
    if request.param == "local":
        return lambda cmd, **kwargs: Local(cmd, **kwargs)
    gateway = await group.makegateway("popen//id=a")
    return lambda cmd, **kwargs: Remote(cmd, gateway, **kwargs)


def only(action: Action) -> Process:
    [process] = action.processes
    return process


async def child_pid(process: Process) -> int:
    """The pid ``WITH_CHILD`` prints, once it has printed it."""
    match = await process.expect(r"(\d+)\n", timeout=10)
    assert match is not None, process.dump()
    return int(match.group(1))


async def first_line(action: Action) -> str:
    """The first line of output of ``action``, which may not have started yet."""
    async with contextlib.aclosing(action.lines()) as lines:
        async for _, _, line in lines:
            return line
    raise AssertionError(f"no output from {action!r}")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- a process's fields -------------------------------------------------------


async def test_outputs_exit_code_and_ok(make: Make) -> None:
    failing = make("echo out; echo err >&2; exit 3")
    process = only(failing)
    assert (process.started, process.ended, process.exit_code) == (False, False, None)
    assert process.ok and not process.finished_ok  # execo: ok until it has failed
    assert failing.ok and not failing.finished_ok

    assert await failing.run() is failing
    assert (process.stdout, process.stderr, process.exit_code) == ("out\n", "err\n", 3)
    assert process.started and process.ended
    assert not process.error and process.error_reason is None
    assert not process.timeouted and not process.killed and not process.forced_kill
    assert not process.ok and not process.finished_ok
    assert not failing.ok and not failing.finished_ok
    assert process.start_date is not None and process.end_date is not None
    assert process.start_date <= process.end_date

    succeeding = await make("printf 'a\\nb'")  # awaiting an action runs it
    process = only(succeeding)
    assert (process.stdout, process.stderr, process.exit_code) == ("a\nb", "", 0)
    assert process.ok and process.finished_ok and succeeding.finished_ok


async def test_ok_while_running_and_after_kill(make: Make) -> None:
    action = make(WITH_CHILD)
    process = only(action.start())
    pid = await child_pid(process)
    assert process.started and not process.ended and process.running
    assert process.ok and not process.finished_ok and action.ok

    assert await action.kill() is action
    assert process.ended and process.killed and not process.timeouted
    assert process.exit_code not in (0, None)
    # a killed process's exit status does not count against it
    assert process.ok and process.finished_ok
    await wait_gone([pid])


async def test_ignore_flags(make: Make) -> None:
    ignored = await make("exit 5", ignore_exit_code=True)
    assert only(ignored).exit_code == 5 and ignored.ok and ignored.finished_ok

    late = await make("sleep 300", timeout=0.3, ignore_timeout=True)
    assert only(late).timeouted and late.ok and late.finished_ok

    late = await make("sleep 300", timeout=0.3)
    assert only(late).timeouted and not late.ok and not late.finished_ok


async def test_connection_errors_are_data_and_ignore_error() -> None:
    port = closed_port()
    params = {"known_hosts": None, "connect_timeout": 5}
    failed = await Remote("true", Host("127.0.0.1", port=port), params)
    process = only(failed)
    assert process.error and process.ended and process.exit_code is None
    assert process.error_reason is not None and f"127.0.0.1:{port}" in process.error_reason
    assert not failed.ok and failed.stats()["num_errors"] == 1

    ignored = await Remote("true", Host("127.0.0.1", port=port), params, ignore_error=True)
    assert only(ignored).error and ignored.ok and ignored.finished_ok


# -- stopping -----------------------------------------------------------------


async def test_timeout_stops_the_command_and_what_it_started(make: Make) -> None:
    action = make(WITH_CHILD, timeout=1.5)
    process = only(action.start())
    pid = await child_pid(process)
    await action.wait()
    assert process.ended and process.timeouted
    assert process.exit_code not in (0, None)
    assert not process.ok and not process.forced_kill
    assert process.start_date is not None and process.end_date is not None
    # stopped at the timeout: SIGTERM was enough, no kill_grace wait
    assert 1.5 <= process.end_date - process.start_date < 1.5 + 1.5
    assert action.stats()["num_timeouts"] == 1
    await wait_gone([pid])


async def test_a_command_ignoring_sigterm_is_killed_after_kill_grace(make: Make) -> None:
    action = make(f"trap '' TERM; {WITH_CHILD}", timeout=0.5, kill_grace=0.5)
    process = only(action.start())
    pid = await child_pid(process)
    await action.wait()
    assert process.ended and process.timeouted
    assert process.start_date is not None and process.end_date is not None
    assert 0.5 + 0.5 <= process.end_date - process.start_date < 0.5 + 0.5 + 2
    await wait_gone([pid])  # SIGKILL went to the whole process group
    # execo's forced_kill: it took SIGKILL, whoever sent it
    assert process.forced_kill, process.dump()
    assert action.stats()["num_forced_kills"] == 1


async def test_cancelling_run_stops_the_command(make: Make) -> None:
    action = make(WITH_CHILD)
    runner = asyncio.create_task(action.run())
    pid = int(await first_line(action))
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    process = only(action)
    assert process.ended and process.killed
    await wait_gone([pid])


async def test_reset_and_run_again(make: Make, tmp_path: Path) -> None:
    count = tmp_path / "count"
    action = make(f"echo x >> {count}; wc -l < {count}")
    process = only(await action.run())
    assert process.stdout.strip() == "1"
    first_end = process.end_date
    with pytest.raises(RuntimeError, match="reset"):
        action.start()  # a second start needs a reset first

    await action.reset().run()
    assert process.stdout.strip() == "2"  # the output of the new run only
    assert process.finished_ok and process.start_date is not None and first_end is not None
    assert process.start_date >= first_end

    running = make("exec sleep 300").start()
    with pytest.raises(RuntimeError, match="running"):
        running.reset()
    await running.kill()


# -- output -------------------------------------------------------------------


async def test_lines_in_order_per_host(group: asyncgw.Group) -> None:
    await group.makegateways([f"popen//id={name}" for name in "abc"])
    action = Remote(
        "for i in $(seq 1 300); do echo {{{host}}} $i; echo e$i >&2; done", group
    ).start()
    seen: dict[tuple[str, str], list[str]] = {}
    async for host, stream, line in action.lines():  # ends when all have ended
        seen.setdefault((host, stream), []).append(line)
    assert action.ended
    for host in "abc":
        assert seen[host, "stdout"] == [f"{host} {i}" for i in range(1, 301)]
        assert seen[host, "stderr"] == [f"e{i}" for i in range(1, 301)]
    assert len(seen) == 6


async def test_lines_wait_for_the_hosts_still_running(group: asyncgw.Group, tmp_path: Path) -> None:
    # One host has ended before lines() is called: lines() goes on with
    # the others until they end.
    await group.makegateways(["popen//id=a", "popen//id=b"])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    commands = ["echo early", f"read line < {fifo}; echo $line"]  # noqa: F841 - read by {{commands}}
    action = Remote("{{commands}}", group).start()
    await action.processes[0].wait()
    seen: list[tuple[str, str, str]] = []

    async def collect() -> None:
        seen.extend([item async for item in action.lines()])

    collector = asyncio.create_task(collect())
    await asyncio.sleep(0)  # let it start listening
    await asyncio.to_thread(fifo.write_text, "late\n")  # b prints it
    try:
        await asyncio.wait_for(asyncio.shield(collector), 10)
    finally:
        await action.kill()
        await collector
    assert action.processes[1].stdout == "late\n"
    assert seen == [("b", "stdout", "late")]


async def test_expect_continues_after_the_previous_match(make: Make) -> None:
    action = make("echo x=1; echo x=2; echo oops >&2; exec sleep 300")
    process = only(action.start())
    first = await process.expect(r"x=(\d)", timeout=10)
    second = await process.expect(r"x=(\d)", timeout=10)
    assert first is not None and second is not None
    assert (first.group(1), second.group(1)) == ("1", "2")
    started = time.monotonic()
    assert await process.expect(r"x=(\d)", timeout=0.3) is None  # no third one
    assert time.monotonic() - started >= 0.3
    on_stderr = await process.expect("oops", timeout=10, stream="stderr")
    assert on_stderr is not None
    await action.kill()

    ended = await make("echo done")
    assert await only(ended).expect("never", timeout=10) is None  # ended: no wait


async def test_action_expect_on_every_host(group: asyncgw.Group) -> None:
    await group.makegateways([f"popen//id={name}" for name in "ab"])
    action = Remote("echo ready {{{host}}}; exec sleep 300", group).start()
    matches = await action.expect(r"ready (\w)", timeout=10)
    assert [(p.host_name, m.group(1) if m else None) for p, m in matches] == [
        ("a", "a"),
        ("b", "b"),
    ]
    await action.kill()


async def test_expect_on_a_process_that_starts_later() -> None:
    # The second action starts when the first ends: waiting for its output
    # before that must see it.
    first, second = Local("echo one"), Local("echo two")
    sequence = SequentialActions([first, second])
    waiting = asyncio.create_task(only(second).expect("two", timeout=10))
    await asyncio.sleep(0)  # let it wait on the unstarted process
    await sequence.run()
    match = await waiting
    assert match is not None, only(second).dump()


async def test_output_handlers(make: Make, tmp_path: Path) -> None:
    calls: list[tuple[Process, str, str]] = []
    buffer = io.StringIO()
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    action = make(
        "echo one; echo bad >&2; echo two",
        stdout_handlers=[lambda *call: calls.append(call), buffer, str(out_path)],
        stderr_handlers=[lambda *call: calls.append(call), err_path],
    )
    await action.run()
    process = only(action)
    assert sorted((stream, line) for p, stream, line in calls if p is process) == [
        ("stderr", "bad"),
        ("stdout", "one"),
        ("stdout", "two"),
    ]
    assert [line for _, stream, line in calls if stream == "stdout"] == ["one", "two"]
    assert buffer.getvalue() == "one\ntwo\n"
    assert out_path.read_text() == "one\ntwo\n"
    assert err_path.read_text() == "bad\n"


# -- substitutions ----------------------------------------------------------------


async def test_substitution_pairs_hosts_as_in_execo(group: asyncgw.Group) -> None:
    hosts1 = await group.makegateways([f"popen//id={name}" for name in "abcdef"])
    hosts2 = [Host("1"), Host("2"), Host("3")]  # noqa: F841 - read by {{...}}
    action = await Remote("echo {{{host}}} -c {{[host.address for host in hosts2]}}", hosts1)
    pairs = [process.stdout.split() for process in action.processes]
    assert pairs == [[a, "-c", b] for a, b in zip("abcdef", "123123", strict=True)]
    assert [process.cmd for process in action.processes][:2] == ["echo a -c 1", "echo b -c 2"]
    assert action.finished_ok


def test_remote_substitute() -> None:
    hosts = [Host("n1"), Host("n2"), Host("n3")]
    context = (globals(), {"ports": [22, 2222]})
    assert [
        remote_substitute("ssh -p {{ports}} {{{host}}}", hosts, index, context)
        for index in range(3)
    ] == ["ssh -p 22 n1", "ssh -p 2222 n2", "ssh -p 22 n3"]


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_plain_commands_are_execd_by_the_remote_shell(shell: str, tmp_path: Path) -> None:
    """The line SshProcess sends for a command: a program with plain words
    becomes the shell (its pid is the header's), with the output and exit
    status it has under the eval'd form; anything else is eval'd."""
    if shutil.which(shell) is None:
        pytest.skip(f"no {shell}")
    for name, body in (("pid", "echo $$ on"), ("three", 'echo "$@"; exit 3')):
        (tmp_path / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / name).chmod(0o755)
    plain = [f"{tmp_path}/three a=b x:1", "uname -s", "  hostname  "]
    shell_syntax = ["echo $HOME", "true", "cd /", "X=1 env", "ls *", "a; b", "exit 2", "-x"]
    assert all(execable(cmd) for cmd in plain)
    assert not any(execable(cmd) for cmd in shell_syntax)

    def run(line: str) -> tuple[list[str], int]:
        done = subprocess.run([shell, "-c", line], capture_output=True, text=True, cwd=tmp_path)
        return done.stdout.splitlines(), done.returncode

    (header, *out), status = run(headed_command(f"{tmp_path}/pid"))
    assert (out, status) == ([f"{header} on"], 0)  # one process: exec, no fork
    for cmd in plain:
        (_, *out), status = run(headed_command(cmd))
        (_, *evald), evald_status = run(_HEADED.format(command=shlex.quote(cmd)))
        assert (out, status) == (evald, evald_status), cmd
    assert run(headed_command(plain[0]))[0][1:] == ["a=b x:1"]


async def test_bad_expressions_raise_naming_them(group: asyncgw.Group) -> None:
    gateway = await group.makegateway("popen//id=a")
    with pytest.raises(ValueError, match=r"\{\{no_such_name\}\}.*NameError"):
        Remote("echo {{no_such_name}}", gateway)
    with pytest.raises(ValueError, match=r"\{\{42\}\}.*sequence"):
        Remote("echo {{42}}", gateway)
    with pytest.raises(ValueError, match=r"\{\{\[\]\}\}"):
        Put(gateway, ["/etc/hostname"], "/tmp/{{[]}}")


async def test_expressions_cannot_run_code(tmp_path: Path) -> None:
    """A command may carry text from elsewhere (a host's output): ``{{...}}``
    in it evaluates names, attributes, subscripts and comprehensions, never
    calls or private names."""
    marker = tmp_path / "pwned"
    hostile = f"{{{{__import__('os').system('touch {marker}')}}}}"
    for text in (hostile, "{{open('/etc/passwd')}}", "{{Host.__subclasses__}}"):
        with pytest.raises(ValueError, match=r"not allowed|private"):
            Remote(f"echo {text}", "node1")
    assert not marker.exists()
    namespace: dict[str, Any] = {"shares": [[1, 2], [3]]}
    expression = "{{[x * 2 for s in shares for x in s if x > 1]}}"
    assert remote_substitute(expression, ["a", "b"], 1, ({}, namespace)) == "6"


# -- Report and combined actions ----------------------------------------------------


async def test_report_layout_and_stats(group: asyncgw.Group) -> None:
    await group.makegateways([f"popen//id={name}" for name in "abc"])
    fine = Remote("echo fine", [group["a"], group["b"]], name="fine")
    bad = Remote("exit 4", group["c"], name="bad")
    slow = Local("sleep 300", timeout=0.3, name="slow")
    everything = ParallelActions([fine, bad, slow], name="everything")
    before = Report(everything).stats()
    assert before["num_processes"] == 4 and before["num_started"] == 0
    assert before["start_date"] is None and before["end_date"] is None

    await everything.run()
    report = Report(everything)
    stats = report.stats()
    processes = everything.processes
    assert stats == {
        "name": "Report",
        "start_date": min(p.start_date for p in processes if p.start_date),
        "end_date": max(p.end_date for p in processes if p.end_date),
        "num_processes": 4,
        "num_started": 4,
        "num_ended": 4,
        "num_errors": 0,
        "num_timeouts": 1,
        "num_forced_kills": 0,
        "num_non_zero_exit_codes": 2,  # bad's 4 and slow's signal
        "num_ok": 2,
        "num_finished_ok": 2,
    }

    lines = report.to_string().splitlines()
    assert lines[0].split() == ["Name", "start", "end"]
    assert lines[1].split() == [
        *("length", "started", "ended", "error", "timeout"),
        *("fkilled", "ret!=0", "ok", "total"),
    ]
    assert lines[2] == "-" * 79
    # two lines per entry: name and dates, then length and counts
    names = [line[:39].rstrip() for line in lines[3:11:2]]
    assert names == ["everything", "  fine", "  bad", "  slow"]
    counts = [line.split()[1:] for line in lines[4:12:2]]
    assert counts == [
        ["4", "4", "0", "1", "0", "2", "2", "4"],
        ["2", "2", "0", "0", "0", "0", "2", "2"],
        ["1", "1", "0", "0", "0", "1", "0", "1"],
        ["1", "1", "0", "1", "0", "1", "0", "1"],
    ]
    assert lines[11] == "-" * 79
    assert lines[12].startswith("Report ")
    assert lines[13].split()[1:] == ["4", "4", "0", "1", "0", "2", "2", "4"]
    assert len(lines) == 14 and all(len(line) <= 80 for line in lines)

    wide = report.to_string(wide=True).splitlines()
    assert wide[0].split() == [
        *("Name", "start", "end", "length", "started", "ended", "errors", "timeouts"),
        *("f.killed", "badretval", "ok", "total"),
    ]
    assert wide[1] == "-" * 175 and len(wide) == 2 + 4 + 1 + 1
    assert wide[-1].startswith("Report ") and wide[-1].split()[-8:] == counts[0]

    brief = report.to_string(brief=True).splitlines()
    assert len(brief) == 5 and brief[3].startswith("Report ")
    assert not any("fine" in line for line in brief)


async def test_sequential_then_parallel_order(group: asyncgw.Group) -> None:
    gateway = await group.makegateway("popen//id=a")
    first, second = Local("sleep 0.3", name="first"), Remote("sleep 0.3", gateway, name="second")
    sequence = await SequentialActions([first, second])
    assert sequence.finished_ok
    [one], [two] = first.processes, second.processes
    assert one.end_date is not None and two.start_date is not None
    assert one.end_date <= two.start_date  # the second started after the first ended

    first, second = Local("sleep 0.3"), Remote("sleep 0.3", gateway)
    together = await ParallelActions([first, second])
    assert together.finished_ok
    processes = together.processes
    # both started before either ended
    assert max(p.start_date for p in processes if p.start_date) < min(
        p.end_date for p in processes if p.end_date
    )


async def test_killing_a_sequence_starts_nothing_more() -> None:
    first, second = Local("echo go; exec sleep 300"), Local("echo never")
    sequence = SequentialActions([first, second])
    with pytest.raises(RuntimeError, match="not started"):
        await sequence.wait()
    sequence.start()
    assert await first_line(sequence) == "go"
    await sequence.kill()
    assert only(first).killed and only(first).ended
    assert not only(second).started


# -- Put and Get through a gateway ----------------------------------------------------

BIG = 100 * 1024 * 1024


def make_sources(root: Path, fraction: float) -> Path:
    """In ``root``: ``big.bin``, 100 MB of random bytes, and ``tree``, 1000
    small files in nested directories, with various sizes and modes;
    modification times all differ and end in ``fraction`` of a second
    (SFTP keeps whole seconds only). Returns ``root``."""
    rng = random.Random(1)
    big = root / "big.bin"
    with big.open("wb") as file:
        for _ in range(BIG // (4 * 1024 * 1024)):
            file.write(os.urandom(4 * 1024 * 1024))
    big.chmod(0o640)
    os.utime(big, (1_600_000_000 + fraction, 1_600_000_000 + fraction))
    tree = root / "tree"
    modes = [0o644, 0o600, 0o755, 0o640, 0o444]
    directories = [tree / f"d{i}" / f"sub{i % 3}" for i in range(10)]
    for directory in directories:
        directory.mkdir(parents=True)
    for index in range(1000):
        path = directories[index % 10] / f"f{index:04}.dat"
        path.write_bytes(rng.randbytes(rng.randrange(0, 3000) if index else 0))
        path.chmod(modes[index % len(modes)])
        mtime = 1_500_000_000 + index + fraction
        os.utime(path, (mtime, mtime))
    # directories last, children first: writing into one changes its time
    for index, directory in enumerate(sorted(tree.rglob("*"), reverse=True)):
        if directory.is_dir():
            directory.chmod(0o750 if index % 2 else 0o755)
            os.utime(directory, (1_400_000_000 + index, 1_400_000_000 + index))
    os.utime(tree, (1_400_000_000 + fraction, 1_400_000_000 + fraction))
    return root


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything below ``root``: kind, mode, mtime and content hash."""
    result: dict[str, tuple[Any, ...]] = {}
    for path in sorted(root.rglob("*")):
        info = path.stat()
        digest = ""
        if path.is_file():
            with path.open("rb") as file:
                digest = hashlib.file_digest(file, "sha256").hexdigest()
        kind = "d" if path.is_dir() else "f"
        result[str(path.relative_to(root))] = (
            kind,
            stat.S_IMODE(info.st_mode),
            info.st_mtime,
            digest,
        )
    return result


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sources(tmp_path_factory.mktemp("sources"), fraction=0.5)


async def test_put_get_round_trip_through_gateways(
    group: asyncgw.Group, sources: Path, tmp_path: Path
) -> None:
    await group.makegateways(["popen//id=a", "popen//id=b"])
    expected = snapshot(sources)
    assert len(expected) == 1 + 1000 + 1 + 10 + 10  # big, files, tree, dirs
    put = Put(
        group,
        [str(sources / "big.bin"), str(sources / "tree")],
        str(tmp_path / "remote" / "{{{host}}}"),
        create_dirs=True,
    )
    await put.run()
    assert put.finished_ok, [p.dump() for p in put.processes]
    assert all(p.transferred >= BIG for p in put.processes)  # type: ignore[attr-defined]
    for host in "ab":
        assert snapshot(tmp_path / "remote" / host) == expected, host

    get = Get(
        group,
        [f"{tmp_path}/remote/{{{{{{host}}}}}}/big.bin", f"{tmp_path}/remote/{{{{{{host}}}}}}/tree"],
        str(tmp_path / "back" / "{{{host}}}"),
        create_dirs=True,
    )
    await get.run()
    assert get.finished_ok, [p.dump() for p in get.processes]
    for host in "ab":
        assert snapshot(tmp_path / "back" / host) == expected, host


async def test_bad_paths_are_reported_not_raised(
    group: asyncgw.Group, sources: Path, tmp_path: Path
) -> None:
    gateway = await group.makegateway("popen//id=a")
    (tmp_path / "a_file").write_text("x")
    bad_destination = str(tmp_path / "a_file" / "below")
    put = await Put(gateway, [str(sources / "tree" / "d0")], bad_destination)
    [process] = put.processes
    assert process.ended and process.error and not put.ok
    assert process.error_reason is not None and bad_destination in process.error_reason

    several = await Put(
        gateway, [str(sources / "big.bin"), str(sources / "tree")], str(tmp_path / "nowhere")
    )
    assert only(several).error and str(tmp_path / "nowhere") in str(only(several).error_reason)

    missing = str(tmp_path / "no_such_file")
    put = await Put(gateway, [missing], str(tmp_path))
    assert only(put).error and missing in str(only(put).error_reason)

    get = await Get(gateway, [missing], str(tmp_path / "got"), create_dirs=True)
    assert only(get).error and missing in str(only(get).error_reason)
    assert not get.ok


# -- hosts and bad inputs -----------------------------------------------------------


def test_host_equality_and_hash() -> None:
    host = Host("node1", user="root", keyfile="/k", port=22)
    same = Host("node1", user="root", keyfile="/k", port=22)
    assert host == same and hash(host) == hash(same) and len({host, same}) == 1
    others = [
        Host("node2", user="root", keyfile="/k", port=22),
        Host("node1", user="admin", keyfile="/k", port=22),
        Host("node1", user="root", keyfile="/other", port=22),
        Host("node1", user="root", keyfile="/k", port=2222),
        Host("node1"),
    ]
    for other in others:
        assert host != other, other
    assert len({host, *others}) == 1 + len(others)
    copy = Host(host, port=2222)  # copies the fields, overrides the given ones
    assert copy == others[3] and host.port == 22
    assert get_hosts_list(["root@node[1-2]:22", same, Host("node1", "root", port=22)]) == [
        Host("node1", "root", port=22),
        Host("node2", "root", port=22),
        host,
    ]
    assert Remote("true", "root@node[1-3]").hosts == [
        Host(f"node{i}", user="root") for i in (1, 2, 3)
    ]


@pytest.mark.parametrize("kind", ["Remote", "Put", "Get"])
def test_unknown_connection_params_raise_at_once(kind: str) -> None:
    # At construction, like every other bad argument, not as a failure of
    # each host at run time.
    params = {"usr": "root"}
    with pytest.raises(ValueError, match=r"unknown connection_params \['usr'\]"):
        if kind == "Remote":
            Remote("true", Host("node1"), connection_params=params)
        elif kind == "Put":
            Put(Host("node1"), ["/etc/hostname"], connection_params=params)
        else:
            Get(Host("node1"), ["/etc/hostname"], connection_params=params)


async def test_bad_inputs_raise_clear_errors(group: asyncgw.Group) -> None:
    gateway = await group.makegateway("popen//id=a")
    with pytest.raises(TypeError, match="unexpected keyword argument 'timout'"):
        Remote("true", gateway, timout=3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'timout'"):
        Local("true", timout=3)
    with pytest.raises(TypeError, match=r"unknown process_args \['timout'\]"):
        Remote("true", gateway, process_args={"timout": 3})
    for empty in ([], "", asyncgw.Group()):
        with pytest.raises(ValueError, match="no hosts"):
            Remote("true", empty)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="timeout must be positive"):
            Remote("true", gateway, timeout=bad)
        with pytest.raises(ValueError, match="timeout must be positive"):
            Local("true", timeout=bad)
    with pytest.raises(ValueError, match="node set"):
        Remote("true", "node[1-")
    with pytest.raises(ValueError, match="non-empty list of paths"):
        Put(gateway, [])
