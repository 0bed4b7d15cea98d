"""Files from a hostile far side: ``Get``, ``Put`` and ``RSync`` never
write outside their destination, never leave a partial file, and report
the real error.

The far sides here are deliberately hostile: a gateway whose remote code
(written below) speaks the wire protocol of :mod:`asyncgw.remote.files`
with crafted entries, names, sizes and items; a local side driving the
real far-side receivers (of ``Put`` and ``RSync``) with a malformed
stream; an SFTP server that lists names no honest server lists; a
destination holding a symlink to outside. Each test checks that nothing
appeared outside the destination, that no partial or temporary file is
left, and that the error names the bad entry.

Also here: a source file that vanishes mid-sync is reported, and a host
without an SFTP subsystem is copied to and from over an exec channel.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

import asyncgw
import asyncgw.files.putget as putget
import asyncgw.files.rsync as files_rsync
import asyncgw.remote.rsync as remote_rsync
from asyncgw.files import RSync
from asyncgw.files.rsync import BLOCK_SIZE
from asyncgw.fleet import Get, Host, Put

from .realsshd import require_sshd, spawn_sshd, stop_sshd, write_sshd_config
from .sshserver import Keys, ssh_server

pytestmark = pytest.mark.anyio


# -- helpers ----------------------------------------------------------------------


def everything(root: Path) -> set[Path]:
    """Every path under ``root`` (symlinks not followed)."""
    found = set()
    for directory, dirs, files in os.walk(root):
        found.update(Path(directory, name) for name in dirs + files)
    return found


class Watch:
    """What appears under ``root`` outside ``destination`` is an escape."""

    def __init__(self, root: Path, destination: Path) -> None:
        self.root = root
        self.destination = destination
        self.before = everything(root)

    def escaped(self) -> set[Path]:
        return {
            path
            for path in everything(self.root) - self.before
            if not path.is_relative_to(self.destination)
            and not self.destination.is_relative_to(path)  # made on the way to it
        }

    def files_in_destination(self) -> list[str]:
        return sorted(
            str(path.relative_to(self.destination))
            for path in everything(self.destination)
            if path.is_file() and not path.is_symlink()
        )


async def closed(sink: Any) -> None:
    """``sink.close()``, awaited if it must be."""
    result = sink.close()
    if inspect.isawaitable(result):
        await result


def hostile_get(channel: Any, items: list[Any]) -> None:
    """The far side of a get, hostile: whatever is asked, ``items``."""
    channel.receive()
    for item in items:
        channel.send(item)


class HostileGateway:
    """A real gateway whose far side of a get runs :func:`hostile_get`."""

    def __init__(self, gateway: asyncgw.Gateway, items: list[Any]) -> None:
        self.id = gateway.id
        self._gateway = gateway
        self._items = items

    def remote_exec(self, source: object) -> asyncgw.Channel:
        return self._gateway.remote_exec(hostile_get, items=self._items)


@pytest.fixture
async def gateway(group: asyncgw.Group) -> asyncgw.Gateway:
    return await group.makegateway("popen//id=far")


# -- Get from a hostile gateway -------------------------------------------------------

FILE = 0o644
DONE = ("done", None)


def escapes(outside: Path) -> list[tuple[str, list[Any], str]]:
    """(case, what the far side sends, the bad name the error must show)."""
    absolute = str(outside / "absolute")
    return [
        ("dotdot", [("f", "../escaped", FILE, 0.0, 1), b"X", None, DONE], "../escaped"),
        (
            "dotdot-deep",
            [("d", "top", 0o755, 0.0), ("f", "top/../../escaped", FILE, 0.0, 1), b"X", None, DONE],
            "top/../../escaped",
        ),
        ("dotdot-dir", [("d", "../escaped-dir", 0o755, 0.0), DONE], "../escaped-dir"),
        ("absolute", [("f", absolute, FILE, 0.0, 1), b"X", None, DONE], absolute),
        ("nul", [("f", "top\x00x", FILE, 0.0, 1), b"X", None, DONE], "top\\x00x"),
        ("empty", [("f", "", FILE, 0.0, 1), b"X", None, DONE], "''"),
        ("empty-part", [("f", "top//x", FILE, 0.0, 1), b"X", None, DONE], "top//x"),
        ("through-symlink", [("f", "link/evil", FILE, 0.0, 1), b"X", None, DONE], "link/evil"),
        ("symlink-dir", [("d", "link", 0o777, 0.0), DONE], "'link'"),
        ("too-many-bytes", [("f", "big", FILE, 0.0, 1), b"XXXX", None, DONE], "'big'"),
        ("too-few-bytes", [("f", "short", FILE, 0.0, 10), b"abc", None, DONE], "'short'"),
        ("not-bytes", [("f", "text", FILE, 0.0, 3), "abc", None, DONE], "'text'"),
        ("bad-size", [("f", "neg", FILE, 0.0, -1), None, DONE], "'neg'"),
        ("bad-mode", [("f", "mode", "rwx", 0.0, 1), b"X", None, DONE], "'mode'"),
        ("not-an-entry", [("x", "what"), DONE], "what"),
    ]


CASES = [case for case, _, _ in escapes(Path("/outside"))]


@pytest.mark.parametrize("case", CASES)
async def test_get_refuses_a_hostile_far_side(
    gateway: asyncgw.Gateway, tmp_path: Path, case: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    destination = tmp_path / "a" / "destination"
    destination.mkdir(parents=True)
    (destination / "link").symlink_to(outside)  # a symlink to outside, in the destination
    [(_, items, bad)] = [c for c in escapes(outside) if c[0] == case]
    watch = Watch(tmp_path, destination)

    with pytest.raises(Exception) as caught:
        await putget.get_through_gateway(
            HostileGateway(gateway, items),  # type: ignore[arg-type]
            ["anything"],
            str(destination),
            create_dirs=False,
        )
    message = str(caught.value)
    assert "refused" in message and bad in message, message
    assert "far" in message  # which gateway sent it
    assert not watch.escaped()
    assert list(outside.iterdir()) == []
    assert watch.files_in_destination() == []  # no partial, no temporary file


async def test_a_get_error_mid_file_is_the_far_sides_and_leaves_nothing(
    gateway: asyncgw.Gateway, tmp_path: Path
) -> None:
    # What the far side sent when a file could not be opened (permission
    # denied): its entry, then its error in place of the bytes.
    denied = "PermissionError: [Errno 13] Permission denied: '/srv/secret'"
    items = [("f", "secret", FILE, 0.0, 3), b"ab", ("error", denied)]
    destination = tmp_path / "got"
    destination.mkdir()
    with pytest.raises(OSError, match="Permission denied: '/srv/secret'") as caught:
        await putget.get_through_gateway(
            HostileGateway(gateway, items),  # type: ignore[arg-type]
            ["/srv/secret"],
            str(destination),
            create_dirs=False,
        )
    assert "far" in str(caught.value)
    assert list(destination.iterdir()) == []  # not even a 0-byte file


async def test_a_get_never_grants_set_id_bits(gateway: asyncgw.Gateway, tmp_path: Path) -> None:
    items = [("f", "tool", 0o6755, 0.0, 1), b"X", None, DONE]
    await putget.get_through_gateway(
        HostileGateway(gateway, items),  # type: ignore[arg-type]
        ["tool"],
        str(tmp_path),
        create_dirs=False,
    )
    assert stat.S_IMODE((tmp_path / "tool").stat().st_mode) == 0o755


async def test_a_get_of_a_file_that_cannot_be_opened_reports_it(
    group: asyncgw.Group, tmp_path: Path
) -> None:
    # An honest far side, a file it cannot open: a socket (stat says it is
    # there, open fails; as root, permissions would not stop it).
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "good.txt").write_text("good")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(remote / "sock"))
    try:
        gateway = await group.makegateway("popen//id=honest")
        get = await Get(
            gateway, [str(remote / "good.txt"), str(remote / "sock")], str(tmp_path / "got"),
            create_dirs=True,
        )  # fmt: skip
    finally:
        listener.close()
    [process] = get.processes
    assert not get.ok and process.error_reason is not None
    assert "No such device or address" in process.error_reason, process.error_reason
    assert str(remote / "sock") in process.error_reason
    assert sorted(os.listdir(tmp_path / "got")) == ["good.txt"]  # no 0-byte "sock"


# -- Put: the far side's receiver, fed a malformed stream ---------------------------


def put_escapes(outside: Path) -> list[tuple[str, list[Any], str]]:
    """(case, entries and bytes sent, the bad name the error must show)."""
    absolute = str(outside / "absolute")
    return [
        ("dotdot", [("f", "../escaped", FILE, 0.0, 1), b"X", None], "../escaped"),
        ("dotdot-dir", [("d", "../escaped-dir", 0o755, 0.0)], "../escaped-dir"),
        ("absolute", [("f", absolute, FILE, 0.0, 1), b"X", None], absolute),
        ("nul", [("f", "a\x00b", FILE, 0.0, 1), b"X", None], "a\\x00b"),
        ("empty", [("f", "", FILE, 0.0, 1), b"X", None], "''"),
        ("through-symlink", [("f", "link/evil", FILE, 0.0, 1), b"X", None], "link/evil"),
        ("too-many-bytes", [("f", "big", FILE, 0.0, 1), b"XXXX", None], "'big'"),
        ("too-few-bytes", [("f", "short", FILE, 0.0, 10), b"abc", None], "'short'"),
    ]


@pytest.mark.parametrize("case", [case for case, _, _ in put_escapes(Path("/o"))])
async def test_put_receiver_refuses_a_malformed_stream(
    gateway: asyncgw.Gateway, tmp_path: Path, case: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    destination = tmp_path / "a" / "destination"
    destination.mkdir(parents=True)
    (destination / "link").symlink_to(outside)
    [(_, items, bad)] = [c for c in put_escapes(outside) if c[0] == case]
    watch = Watch(tmp_path, destination)

    sink = putget.GatewaySink(gateway, str(destination), False, 1)
    with pytest.raises(OSError) as caught:
        try:
            await sink.open()
            entry: Any = None
            for item in items:
                if isinstance(item, tuple) and item[0] == "d":
                    await sink.directory(item)
                elif isinstance(item, tuple):
                    entry = item
                    await sink.begin_file(item)
                elif item is None:
                    await sink.end_file(entry)
                else:
                    await sink.write(item)
            await sink.finish()
        finally:
            await closed(sink)
    message = str(caught.value)
    assert "refused" in message and bad in message, message
    assert not watch.escaped()
    assert list(outside.iterdir()) == []
    assert watch.files_in_destination() == []


async def test_an_interrupted_put_leaves_no_partial_file(
    gateway: asyncgw.Gateway, tmp_path: Path
) -> None:
    sink = putget.GatewaySink(gateway, str(tmp_path), False, 1)
    await sink.open()
    await sink.begin_file(("f", "big.bin", FILE, 0.0, 10))
    await sink.write(b"abc")
    # The far side has begun the file (and waits for the rest) once
    # something appears; then the put stops mid-file.
    assert await until(lambda: os.listdir(tmp_path) != [])
    await closed(sink)
    # The far side notices the channel closed and cleans up.
    assert await until(lambda: os.listdir(tmp_path) == []), os.listdir(tmp_path)


async def until(condition: Any, timeout: float = 10.0) -> bool:
    """Whether ``condition()`` became true within ``timeout`` seconds
    (for what happens in another process, which we cannot wait on)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


# -- RSync: the far side's receiver, fed a malformed stream ---------------------------


async def drive_rsync(gateway: asyncgw.Gateway, destination: Path, entries: list[Any]) -> None:
    """Speak the local side of :mod:`asyncgw.remote.rsync`'s conversation
    with ``entries`` as the manifest; each wanted file gets ``b"X"``."""
    source = getattr(files_rsync, "_REMOTE_SOURCE", remote_rsync)
    channel = gateway.remote_exec(source)
    try:
        await channel.send((str(destination), {"delete": False, "block": BLOCK_SIZE}))
        await channel.send(entries)
        await channel.send(None)
        wanted: list[int] = []
        while True:
            command, value = await channel.receive()
            if command == "want":
                wanted += [index for index, _ in value]
            elif command == "listed":
                try:
                    for _ in wanted:
                        await channel.send(b"X")
                        await channel.send((FILE, 0))
                except asyncgw.ChannelIOError:
                    # The far side refused a file and closed while we still
                    # sent: its verdict is the channel's error.
                    await channel.waitclose()
                    raise
            elif command == "done":
                return
    finally:
        channel.close()


def rsync_escapes(outside: Path) -> list[tuple[str, list[Any], str]]:
    root = ("d", "", 0o755, [])
    return [
        ("dotdot", [root, ("f", "../escaped", FILE, 0, 1)], "../escaped"),
        ("absolute", [root, ("f", str(outside / "abs"), FILE, 0, 1)], str(outside / "abs")),
        ("nul", [root, ("f", "a\x00b", FILE, 0, 1)], "a\\x00b"),
        ("root-again", [root, ("f", "", FILE, 0, 1)], "''"),
        (
            "link-then-file",
            [root, ("l", "evil", str(outside), False), ("f", "evil/planted", FILE, 0, 1)],
            "evil/planted",
        ),
        (
            "dir-replaced-by-link",
            [
                root,
                ("d", "a", 0o755, ["x"]),
                ("f", "a/x", FILE, 0, 1),
                ("l", "a", str(outside), False),
            ],
            "a/x",
        ),
        ("rebased-dotdot", [root, ("l", "up", "../../outside", True)], "../../outside"),
        ("bad-size", [root, ("f", "neg", FILE, 0, -5)], "'neg'"),
    ]


@pytest.mark.parametrize("case", [case for case, _, _ in rsync_escapes(Path("/o"))])
async def test_rsync_receiver_refuses_a_malformed_stream(
    gateway: asyncgw.Gateway, tmp_path: Path, case: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    destination = tmp_path / "a" / "destination"
    destination.mkdir(parents=True)
    [(_, entries, bad)] = [c for c in rsync_escapes(outside) if c[0] == case]
    watch = Watch(tmp_path, destination)

    with pytest.raises(asyncgw.RemoteError) as caught:
        await drive_rsync(gateway, destination, entries)
    message = str(caught.value)
    assert "refused" in message and bad in message, message
    assert not watch.escaped()
    assert list(outside.iterdir()) == []
    assert destination.is_dir()
    assert [p for p in everything(destination) if p.name.endswith(".tmp")] == []


async def test_a_source_file_that_vanishes_mid_sync_is_reported(
    gateway: asyncgw.Gateway, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (source / name).write_text(name)
    destination = tmp_path / "destination"

    def vanish(command: str, size: int, channel: object) -> None:
        if command == "list":  # the walk is done, no file has been read yet
            (source / "b.txt").unlink()

    rsync = RSync(source, callback=vanish, verbose=False)
    rsync.add_target(gateway, destination)
    with pytest.raises(FileNotFoundError) as caught:
        await rsync.send()
    assert "b.txt" in str(caught.value)
    assert sorted(os.listdir(destination)) == ["a.txt", "c.txt"]  # the rest is done


# -- SSH: a hostile SFTP server, a host without SFTP ---------------------------------


class HostileSftp(asyncssh.SFTPServer):
    """Lists one more name in every directory called ``dir``: one that
    climbs out, to a real file on this (the server's) side."""

    extra = b"../../escaped"

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:  # type: ignore[override]
        async for name in super().scandir(path):
            yield name
        if path.rstrip(b"/").endswith(b"/dir"):
            real = os.path.join(os.fsdecode(path), os.fsdecode(self.extra))
            yield asyncssh.SFTPName(self.extra, attrs=asyncssh.SFTPAttrs.from_local(os.stat(real)))


class FailingSftp(asyncssh.SFTPServer):
    """Fails reads and writes past the first 64 KiB of a file, as a full
    disk or a failing one would."""

    def read(self, file_obj: object, offset: int, size: int) -> Any:
        if offset + size > 65536:
            raise asyncssh.SFTPFailure("I/O error past 64 KiB")
        return super().read(file_obj, offset, size)

    def write(self, file_obj: object, offset: int, data: bytes) -> Any:
        if offset + len(data) > 65536:
            raise asyncssh.SFTPFailure("No space left past 64 KiB")
        return super().write(file_obj, offset, data)


def params(keys: Keys, port: int) -> dict[str, Any]:
    return {
        "user": "root",
        "keyfile": str(keys.user_key_path),
        "known_hosts": str(keys.known_hosts(port)),
        "port": port,
        "connect_timeout": 20,
    }


async def test_get_over_sftp_refuses_a_name_that_climbs_out(ssh_keys: Keys, tmp_path: Path) -> None:
    served = tmp_path / "served"
    (served / "remote" / "dir").mkdir(parents=True)
    (served / "remote" / "dir" / "ok.txt").write_text("ok")
    (served / "escaped").write_text("from the far side")  # what "../../escaped" names there
    destination = tmp_path / "back" / "here"
    watch = Watch(tmp_path, destination)
    async with (
        ssh_server(ssh_keys, sftp_factory=HostileSftp) as (port, _),
        Get(
            Host("127.0.0.1"), [str(served / "remote" / "dir")], str(destination),
            params(ssh_keys, port), create_dirs=True,
        ) as get,
    ):  # fmt: skip
        await get.run()
    [process] = get.processes
    assert not get.ok and process.error_reason is not None
    assert "refused" in process.error_reason and "../../escaped" in process.error_reason
    assert not watch.escaped(), watch.escaped()


async def test_put_and_get_work_on_a_host_without_sftp(
    ssh_keys: Keys, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "source"
    (source / "tree" / "sub").mkdir(parents=True)
    (source / "tree" / "sub" / "f.txt").write_text("deep")
    (source / "one.txt").write_text("one")
    os.chmod(source / "one.txt", 0o640)
    os.utime(source / "one.txt", (1_600_000_000, 1_600_000_000))
    caplog.set_level(logging.INFO, logger="asyncgw")
    async with ssh_server(ssh_keys) as (port, stats):  # no SFTP subsystem
        host = Host("127.0.0.1")
        async with Put(
            host, [str(source / "one.txt"), str(source / "tree")], str(tmp_path / "remote"),
            params(ssh_keys, port), create_dirs=True,
        ) as put:  # fmt: skip
            await put.run()
        assert put.ok, [p.error_reason for p in put.processes]
        async with Get(
            host, [str(tmp_path / "remote" / "one.txt"), str(tmp_path / "remote" / "tree")],
            str(tmp_path / "back"), params(ssh_keys, port), create_dirs=True,
        ) as get:  # fmt: skip
            await get.run()
        assert get.ok, [p.error_reason for p in get.processes]
    # each action: one connection, for the SFTP attempt and the gateway
    assert stats.connections == 2
    for where in ("remote", "back"):
        copy = tmp_path / where
        assert (copy / "tree" / "sub" / "f.txt").read_text() == "deep"
        assert (copy / "one.txt").read_text() == "one"
        assert stat.S_IMODE((copy / "one.txt").stat().st_mode) == 0o640
        assert (copy / "one.txt").stat().st_mtime == 1_600_000_000
    assert "has no SFTP subsystem" in caplog.text
    assert "exec channel" in caplog.text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_put_and_get_over_openssh_without_sftp(ssh_keys: Keys, tmp_path: Path) -> None:
    require_sshd()
    port = free_port()
    config = write_sshd_config(ssh_keys, tmp_path, "127.0.0.1", port, "SetEnv SHLVL=1\n")
    config.write_text(config.read_text().replace("Subsystem sftp internal-sftp\n", ""))
    server = spawn_sshd(config, tmp_path / "sshd.log")
    try:
        assert await until(lambda: sshd_listening(port), timeout=15), (
            tmp_path / "sshd.log"
        ).read_text()
        source = tmp_path / "source.txt"
        source.write_text("over exec")
        host = Host("127.0.0.1")
        async with Put(
            host, [str(source)], str(tmp_path / "remote"), params(ssh_keys, port),
            create_dirs=True,
        ) as put:  # fmt: skip
            await put.run()
        assert put.ok, [p.error_reason for p in put.processes]
        async with Get(
            host, [str(tmp_path / "remote" / "source.txt")], str(tmp_path / "back"),
            params(ssh_keys, port), create_dirs=True,
        ) as get:  # fmt: skip
            await get.run()
        assert get.ok, [p.error_reason for p in get.processes]
    finally:
        stop_sshd(server)
    assert (tmp_path / "back" / "source.txt").read_text() == "over exec"
    assert "subsystem request for sftp" in (tmp_path / "sshd.log").read_text()


def sshd_listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


async def test_a_failed_sftp_copy_leaves_no_partial_file(ssh_keys: Keys, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1024 * 1024))
    (tmp_path / "remote").mkdir()
    (tmp_path / "back").mkdir()
    host = Host("127.0.0.1")
    async with ssh_server(ssh_keys, sftp_factory=FailingSftp) as (port, _):
        async with Put(host, [str(big)], str(tmp_path / "remote"), params(ssh_keys, port)) as put:
            await put.run()
        async with Get(host, [str(big)], str(tmp_path / "back"), params(ssh_keys, port)) as get:
            await get.run()
    [put_process], [get_process] = put.processes, get.processes
    assert "No space left past 64 KiB" in str(put_process.error_reason), put_process.error_reason
    assert "I/O error past 64 KiB" in str(get_process.error_reason), get_process.error_reason
    assert os.listdir(tmp_path / "remote") == []  # no partial file, no temporary one
    assert os.listdir(tmp_path / "back") == []
