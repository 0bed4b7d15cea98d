"""The socket server admits only clients that prove the secret, before
anything runs; it listens on loopback unless told otherwise."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

import asyncgw
from asyncgw import _bootstrap, _wire

from .socketserver import SECRET, socket_server

pytestmark = pytest.mark.anyio


def _workers(server: subprocess.Popen[str]) -> list[psutil.Process]:
    return psutil.Process(server.pid).children(recursive=True)


async def test_wrong_secret_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-secret-at-all")
    with socket_server(tmp_path) as server:
        async with asyncgw.Group() as group:
            with pytest.raises(asyncgw.AuthenticationError, match="refused our secret"):
                await group.makegateway(f"socket={server.address}//socket_secret_file={wrong}")
            assert _workers(server.process) == []
            gw = await group.makegateway(server.spec())
            assert await gw.remote_exec("channel.send(1)").receive() == 1
            assert len(_workers(server.process)) == 1


def test_unauthenticated_client_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    source = f"open({str(marker)!r}, 'w').write('ran')"
    exec_frame = _wire.encode_frame(_wire.EXEC, 1, _wire.dumps((source, None, None, False)))
    with socket_server(tmp_path) as server:
        host, port = server.address.rsplit(":", 1)
        for attempt in [b"", b"garbage\n", b"0" * 64 + b"\n"]:
            with socket.create_connection((host, int(port)), timeout=10) as conn:
                assert conn.recv(100).startswith(b"ASYNCGW-AUTH1 ")
                # Skip or botch the answer and push a worker bootstrap regardless.
                received = b""
                with contextlib.suppress(ConnectionError):
                    conn.sendall(attempt + _bootstrap.bootstrap_payload({}) + exec_frame)
                    while chunk := conn.recv(100):  # until the server closes on us
                        received += chunk
                assert b"OK" not in received
        assert _workers(server.process) == []
    assert not marker.exists()


def test_secret_stays_out_of_listings_and_logs(tmp_path: Path) -> None:
    with socket_server(tmp_path) as server:
        cmdline = " ".join(psutil.Process(server.process.pid).cmdline())
        assert SECRET not in cmdline
        conn = socket.create_connection(tuple(server.address.rsplit(":", 1)), timeout=10)  # type: ignore[arg-type]
        conn.close()
        listening = psutil.Process(server.process.pid).net_connections(kind="inet")
        assert {c.laddr.ip for c in listening if c.status == psutil.CONN_LISTEN} == {"127.0.0.1"}
    _, log = server.process.communicate()
    assert SECRET not in log


def run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``asyncgw serve`` on a free port, for a server that should not start."""
    return subprocess.run(
        [sys.executable, "-m", "asyncgw", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_server_refuses_to_start_without_a_secret() -> None:
    env = {key: value for key, value in os.environ.items() if key != "ASYNCGW_SECRET"}
    proc = run_serve(env=env)
    assert proc.returncode != 0
    assert "secret of at least 16 bytes is required" in proc.stderr


async def test_secret_from_the_environment_and_bad_addresses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket_server(tmp_path) as server:
        async with asyncgw.Group() as group:
            with pytest.raises(asyncgw.SpecError, match="needs a secret"):
                await group.makegateway(f"socket={server.address}")
            monkeypatch.setenv("ASYNCGW_SECRET", SECRET)
            gw = await group.makegateway(f"socket={server.address}")
            assert await gw.remote_exec("channel.send(2)").receive() == 2
            with pytest.raises(asyncgw.SpecError, match="host:port"):
                await group.makegateway("socket=nowhere")


async def test_installvia_starts_a_server_through_a_gateway() -> None:
    async with asyncgw.Group() as group:
        host = await group.makegateway("popen//id=host")
        gw = await group.makegateway("socket//installvia=host")
        assert gw.remote_pid is not None and host.remote_pid is not None
        assert psutil.Process(gw.remote_pid).ppid() == host.remote_pid  # served by the host
        assert await gw.remote_exec("channel.send('served')").receive() == "served"
        with pytest.raises(asyncgw.SpecError, match="no gateway 'elsewhere' to install via"):
            await group.makegateway("socket//installvia=elsewhere")
        # Ending the group ends the served worker before its server's host.
        assert [wave[0].id for wave in asyncgw._group._proxies_last(list(group))] == [
            "gw0",
            "host",
        ]


def test_a_secret_file_others_can_read_is_refused(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o644)
    result = run_serve("--secret-file", str(secret_file))
    assert result.returncode != 0
    assert "open to others (mode 644)" in result.stderr
    assert f"chmod 600 {secret_file}" in result.stderr
    assert "listening" not in result.stdout


async def test_connections_authenticating_at_once_are_bounded(tmp_path: Path) -> None:
    with socket_server(tmp_path, "--max-pending", "2") as server:
        host, port = server.address.rsplit(":", 1)
        idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(2)]
        try:
            for conn in idle:  # each got its challenge and holds a place
                assert conn.makefile("rb").readline().startswith(b"ASYNCGW-AUTH1 ")
            with socket.create_connection((host, int(port)), timeout=10) as third:
                assert third.recv(100) == b""  # closed at once: no place left
            for conn in idle:  # a wrong answer frees the place before DENIED
                conn.sendall(b"0" * 64 + b"\n")
                assert conn.makefile("rb").readline() == b"DENIED\n"
        finally:
            for conn in idle:
                conn.close()
        async with asyncgw.Group() as group:
            gw = await group.makegateway(server.spec())
            assert await gw.remote_exec("channel.send(1)").receive() == 1
