"""The socket server admits only clients that prove the secret, before
anything runs; it listens on loopback unless told otherwise. Clients talk
to it over TLS and verify its pinned certificate before they send
anything: a fake server or a relay gets neither the answer nor the code.
Its handshake has one deadline, holds many idle connections cheaply, and
the client reads a bounded handshake."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psutil
import pytest

import asyncgw
from asyncgw import _bootstrap, _wire, server
from asyncgw.transports import socket as socket_transport

from .socketserver import PLAINTEXT_KEY, SECRET, Server, socket_server

pytestmark = pytest.mark.anyio


#: The limits of the handshake hold with TLS and without.
MODES = pytest.mark.parametrize("mode", ["tls", "plaintext"])


def _mode_args(mode: str) -> list[str]:
    return ["--plaintext"] if mode == "plaintext" else []


def _connect_held(address: str, mode: str) -> socket.socket:
    """A connection that has its challenge and will never answer it."""
    conn = (
        _tls_connect(address)
        if mode == "tls"
        else socket.create_connection(_host_port(address), timeout=10)
    )
    assert conn.recv(100).startswith(b"ASYNCGW-AUTH1 ")
    return conn


def _workers(server: Server) -> list[psutil.Process]:
    return psutil.Process(server.process.pid).children(recursive=True)


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _tls_connect(address: str) -> ssl.SSLSocket:
    """A raw TLS connection to ``address``, the server unverified."""
    conn = socket.create_connection(_host_port(address), timeout=10)
    return _client_context().wrap_socket(conn)


def _own_certificate(directory: Path, name: str) -> tuple[ssl.SSLContext, str]:
    """A server context with a fresh certificate, and its fingerprint."""
    from asyncgw import _certgen

    cert, key = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    _certgen.make_cert(str(cert), str(key))
    context, der = server.tls_context(str(cert), str(key))
    return context, server.fingerprint(der)


@contextlib.asynccontextmanager
async def _listen(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    tls: ssl.SSLContext | None,
    failed_tls: Callable[[], None] = lambda: None,
) -> AsyncIterator[str]:
    """An in-test server on a free loopback port; yields its address. With
    ``tls``, each connection is upgraded first; one whose TLS handshake
    fails (a client that drops it at once) calls ``failed_tls`` instead."""

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if tls is not None:
            try:
                await writer.start_tls(tls)
            except (OSError, EOFError):  # ssl.SSLError is an OSError
                writer.close()
                failed_tls()
                return
        await handler(reader, writer)

    listener = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    finally:
        listener.close()
        await listener.wait_closed()


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    received = b""
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while chunk := await reader.read(65536):
            received += chunk
    return received


async def test_a_relay_gets_neither_the_answer_nor_the_code(tmp_path: Path) -> None:
    """A relay between the client and the real server (its own certificate,
    the real server's challenge passed on) is refused by the client as soon
    as TLS is up: not one byte of the client's reaches it, so it has no
    answer to log in with, and nothing runs on the server."""
    relay_tls, relay_fingerprint = _own_certificate(tmp_path, "relay")
    from_client: list[bytes] = []
    done = asyncio.Event()
    with socket_server(tmp_path) as real:

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(
                *_host_port(real.address), ssl=_client_context()
            )
            writer.write(await up_reader.readline())  # the real server's challenge
            from_client.append(await _read_all(reader))  # what the client answers
            up_writer.write(from_client[-1])
            writer.close()
            up_writer.close()
            done.set()

        def dropped() -> None:
            from_client.append(b"")
            done.set()

        async with (
            _listen(relay, relay_tls, dropped) as relay_address,
            asyncgw.Group() as group,
        ):
            spec = real.spec().replace(real.address, relay_address)
            with pytest.raises(asyncgw.HostKeyError, match="is not the one pinned") as caught:
                await group.makegateway(spec)
            assert relay_fingerprint in str(caught.value)
            assert "nothing was sent" in str(caught.value)
            await asyncio.wait_for(done.wait(), 10)
        assert from_client == [b""]
        assert _workers(real) == []
        assert "OK" not in real.log_text()


async def test_an_answer_relayed_to_another_certificate_is_denied(tmp_path: Path) -> None:
    """Even a client tricked into pinning the relay's certificate gives it
    an answer bound to that certificate: the real server refuses it."""
    relay_tls, relay_fingerprint = _own_certificate(tmp_path, "relay")
    relayed: list[bytes] = []
    with socket_server(tmp_path) as real:

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(
                *_host_port(real.address), ssl=_client_context()
            )
            writer.write(await up_reader.readline())
            relayed.append(await reader.readline())  # the client's answer
            up_writer.write(relayed[-1])
            writer.write(await up_reader.readline())  # the real server's verdict
            await writer.drain()
            writer.close()
            up_writer.close()

        async with _listen(relay, relay_tls) as relay_address, asyncgw.Group() as group:
            spec = (
                f"socket={relay_address}//socket_secret_file={real.secret_file}"
                f"//socket_fingerprint={relay_fingerprint}"
            )
            with pytest.raises(asyncgw.AuthenticationError, match="refused our secret"):
                await group.makegateway(spec)
        assert len(relayed) == 1 and len(relayed[0].strip()) == 64  # it did pass an answer on
        assert _workers(real) == []
        assert "authentication failed" in real.log_text()


async def test_a_fake_server_gets_nothing(tmp_path: Path) -> None:
    """A fake server that sends a challenge gets no answer and no code,
    whether the client pins the real server or knows it from a file."""
    fake_tls, _ = _own_certificate(tmp_path, "fake")
    received: list[bytes] = []
    both = asyncio.Event()

    def record(data: bytes) -> None:
        received.append(data)
        if len(received) == 2:
            both.set()

    async def fake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(server.CHALLENGE + b"ab" * 32 + b"\n")
        record(await _read_all(reader))
        writer.close()

    with socket_server(tmp_path) as real:
        known = tmp_path / "known_servers"
        async with (
            _listen(fake, fake_tls, lambda: record(b"")) as fake_address,
            asyncgw.Group() as group,
        ):
            known.write_text(f"# servers\n{fake_address} {real.fingerprint}\n")
            pinned = real.spec().replace(real.address, fake_address)
            listed = f"socket={fake_address}//socket_secret_file={real.secret_file}"
            with pytest.raises(asyncgw.HostKeyError, match="is not the one pinned"):
                await group.makegateway(pinned)
            with pytest.raises(asyncgw.HostKeyError, match=f"is not the one in {known}"):
                await group.makegateway(f"{listed}//socket_known_servers={known}")
            await asyncio.wait_for(both.wait(), 10)  # the fake saw both connections end
        assert received == [b"", b""]
        assert _workers(real) == []


async def test_an_unknown_server_is_refused_naming_its_fingerprint(tmp_path: Path) -> None:
    """No pin and no known-servers entry: refused, with the fingerprint to
    check against the server's and how to pin it; a file entry admits."""
    with socket_server(tmp_path) as real:
        known = tmp_path / "known_servers"
        spec = f"socket={real.address}//socket_secret_file={real.secret_file}"
        async with asyncgw.Group() as group:
            with pytest.raises(asyncgw.HostKeyError, match="is not known") as caught:
                await group.makegateway(f"{spec}//socket_known_servers={known}")
            assert f"socket_fingerprint={real.fingerprint}" in str(caught.value)
            assert f"'{real.address} {real.fingerprint}' in {known}" in str(caught.value)
            assert "OK" not in real.log_text() and _workers(real) == []
            # The standard base64 alphabet reads as well as the URL-safe one.
            standard = real.fingerprint.replace("-", "+").replace("_", "/")
            known.write_text(f"{real.address} {standard}\n")
            gw = await group.makegateway(f"{spec}//socket_known_servers={known}")
            assert await gw.remote_exec("channel.send(3)").receive() == 3
            with pytest.raises(asyncgw.SpecError, match="socket_fingerprint"):
                await group.makegateway(f"{spec}//socket_fingerprint=MD5:00")


async def test_the_stream_is_tls(tmp_path: Path) -> None:
    """A worker's traffic crosses the network encrypted: a plaintext peer
    gets a TLS alert, not the challenge, and what a gateway sends does not
    appear in clear on the wire (seen through a byte-counting forwarder)."""
    wire = bytearray()
    with socket_server(tmp_path) as real:

        async def tap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(*_host_port(real.address))

            async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
                while chunk := await source.read(65536):
                    wire.extend(chunk)
                    sink.write(chunk)
                sink.close()

            with contextlib.suppress(ConnectionError):
                await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

        with socket.create_connection(_host_port(real.address), timeout=10) as plain:
            plain.sendall(b"hello\n")
            answered = b""
            with contextlib.suppress(ConnectionError):  # a reset is an answer too
                answered = plain.recv(100)
            assert b"ASYNCGW" not in answered
        async with _listen(tap, None) as tap_address, asyncgw.Group() as group:
            spec = real.spec().replace(real.address, tap_address)
            gw = await group.makegateway(spec)
            marker = "a-marker-that-must-not-appear-in-clear"
            assert await gw.remote_exec(f"channel.send({marker!r} * 2)").receive() == marker * 2
        assert len(wire) > 1000
        assert marker.encode() not in wire and b"ASYNCGW" not in wire


async def test_plaintext_is_an_explicit_opt_in(tmp_path: Path) -> None:
    with socket_server(tmp_path, "--plaintext", "--handshake-timeout", "2") as plain:
        assert plain.fingerprint == ""
        tls_spec = f"socket={plain.address}//socket_secret_file={plain.secret_file}"
        async with asyncgw.Group() as group:
            with pytest.raises(asyncgw.HostNotFound, match="needs socket_plaintext"):
                await group.makegateway(f"{tls_spec}//socket_fingerprint=SHA256:{'A' * 43}")
            gw = await group.makegateway(plain.spec())
            assert await gw.remote_exec("channel.send(4)").receive() == 4
            with pytest.raises(asyncgw.SpecError, match="exclude each other"):
                await group.makegateway(f"{plain.spec()}//socket_fingerprint=SHA256:{'A' * 43}")
    with socket_server(tmp_path, "--handshake-timeout", "1") as tls:
        async with asyncgw.Group() as group:
            with pytest.raises(asyncgw.GatewayError, match="closed the connection during the"):
                await group.makegateway(f"{tls_spec.replace(plain.address, tls.address)}"
                                        "//socket_plaintext")  # fmt: skip


async def test_wrong_secret_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-secret-at-all")
    with socket_server(tmp_path) as server_:
        async with asyncgw.Group() as group:
            with pytest.raises(asyncgw.AuthenticationError, match="refused our secret"):
                await group.makegateway(
                    server_.spec().replace(str(server_.secret_file), str(wrong))
                )
            assert _workers(server_) == []
            gw = await group.makegateway(server_.spec())
            assert await gw.remote_exec("channel.send(1)").receive() == 1
            assert len(_workers(server_)) == 1


def test_unauthenticated_client_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    source = f"open({str(marker)!r}, 'w').write('ran')"
    exec_frame = _wire.encode_frame(_wire.EXEC, 1, _wire.dumps((source, None, None, False)))
    with socket_server(tmp_path) as server_:
        for attempt in [b"", b"garbage\n", b"0" * 64 + b"\n"]:
            with _tls_connect(server_.address) as conn:
                assert conn.recv(100).startswith(b"ASYNCGW-AUTH1 ")
                # Skip or botch the answer and push a worker bootstrap regardless.
                received = b""
                with contextlib.suppress(ConnectionError, ssl.SSLError):
                    conn.sendall(attempt + _bootstrap.bootstrap_payload({}) + exec_frame)
                    while chunk := conn.recv(100):  # until the server closes on us
                        received += chunk
                assert b"OK" not in received
        assert _workers(server_) == []
    assert not marker.exists()


def test_secret_stays_out_of_listings_and_logs(tmp_path: Path) -> None:
    with socket_server(tmp_path) as server_:
        cmdline = " ".join(psutil.Process(server_.process.pid).cmdline())
        assert SECRET not in cmdline
        conn = socket.create_connection(_host_port(server_.address), timeout=10)
        conn.close()
        listening = psutil.Process(server_.process.pid).net_connections(kind="inet")
        assert {c.laddr.ip for c in listening if c.status == psutil.CONN_LISTEN} == {"127.0.0.1"}
    assert SECRET not in server_.log_text()


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


def test_a_missing_secret_file_is_one_line_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"
    result = run_serve("--secret-file", str(missing))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"asyncgw.server: cannot read the secret file {missing}: No such file or directory"
    ]
    assert "listening" not in result.stdout


def test_serve_makes_a_certificate_and_prints_its_fingerprint(tmp_path: Path) -> None:
    """``asyncgw serve`` makes a key and certificate (mode 600) where none
    exist, keeps them, and prints the fingerprint clients pin."""
    with socket_server(tmp_path) as first:
        pass
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    assert cert.stat().st_mode & 0o777 == 0o600 and key.stat().st_mode & 0o777 == 0o600
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    assert first.fingerprint == server.fingerprint(der)
    assert first.fingerprint.startswith("SHA256:") and len(first.fingerprint) == 50
    with socket_server(tmp_path) as second:  # the same identity next time
        assert second.fingerprint == first.fingerprint


def test_the_copied_server_without_a_certificate_says_what_to_do(tmp_path: Path) -> None:
    """server.py alone (no cryptography to make a key with) names the
    missing file and how to make one, in one line."""
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    cert = tmp_path / "cert.pem"
    result = subprocess.run(
        [sys.executable, server.__file__, "--port", "0", "--secret-file", str(secret),
         "--cert", str(cert), "--key", str(tmp_path / "key.pem")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"no certificate at {cert}" in result.stderr
    assert "openssl req -x509" in result.stderr and "--plaintext" in result.stderr


async def test_secret_from_the_environment_and_bad_addresses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket_server(tmp_path) as server_:
        pin = f"//socket_fingerprint={server_.fingerprint}"
        async with asyncgw.Group() as group:
            with pytest.raises(asyncgw.SpecError, match="needs a secret"):
                await group.makegateway(f"socket={server_.address}{pin}")
            monkeypatch.setenv("ASYNCGW_SECRET", SECRET)
            gw = await group.makegateway(f"socket={server_.address}{pin}")
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


async def test_installvia_serves_tls_with_a_pinned_certificate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The installed server presents the certificate made here for it: a
    server presenting another is refused before anything is sent."""
    from asyncgw import _certgen

    made = []
    real_make_pem = _certgen.make_pem

    def make_pem() -> tuple[bytes, bytes]:
        made.append(real_make_pem())
        return made[-1]

    monkeypatch.setattr(_certgen, "make_pem", make_pem)
    async with asyncgw.Group() as group:
        await group.makegateway("popen//id=host")
        gw = await group.makegateway("socket//installvia=host")
        assert len(made) == 1
        assert await gw.remote_exec("channel.send(5)").receive() == 5
        verify = socket_transport._pinned(
            server.fingerprint(ssl.PEM_cert_to_DER_cert(made[0][0].decode())), "x:1"
        )
        other = ssl.PEM_cert_to_DER_cert(real_make_pem()[0].decode())
        with pytest.raises(asyncgw.HostKeyError, match="not the one installed"):
            verify(other)


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
    with socket_server(tmp_path, "--max-pending", "2") as server_:
        idle = [_tls_connect(server_.address) for _ in range(2)]
        try:
            for conn in idle:  # each got its challenge and holds a place
                assert conn.recv(100).startswith(b"ASYNCGW-AUTH1 ")
            with socket.create_connection(_host_port(server_.address), timeout=10) as third:
                assert third.recv(100) == b""  # closed at once: no place left
            for conn in idle:  # a wrong answer frees the place before DENIED
                conn.sendall(b"0" * 64 + b"\n")
                assert conn.recv(100) == b"DENIED\n"
        finally:
            for conn in idle:
                conn.close()
        async with asyncgw.Group() as group:
            gw = await group.makegateway(server_.spec())
            assert await gw.remote_exec("channel.send(1)").receive() == 1


@MODES
async def test_a_refusal_is_not_host_not_found(tmp_path: Path, mode: str) -> None:
    """A server with no place left closes the connection: a GatewayError
    that says so, not HostNotFound (which means nothing answered)."""
    with (
        socket_server(tmp_path, "--max-pending", "1", *_mode_args(mode)) as server_,
        _connect_held(server_.address, mode),  # holds the one place
    ):
        async with asyncgw.Group() as group:
            with pytest.raises(asyncgw.GatewayError, match="closed the connection") as caught:
                await group.makegateway(server_.spec())
            assert not isinstance(caught.value, asyncgw.HostNotFound)


async def test_the_whole_handshake_has_one_deadline(tmp_path: Path) -> None:
    """A peer that trickles a byte at a time is closed at the handshake's
    deadline, however often it sends: each byte does not buy more time."""
    with socket_server(tmp_path, "--handshake-timeout", "2") as server_:
        hello = _client_hello()
        with socket.create_connection(_host_port(server_.address), timeout=10) as slow:
            started = time.monotonic()
            closed = False
            for byte in hello[:200]:  # 200 bytes, one every 0.1 s: 20 s if let be
                try:
                    slow.sendall(bytes([byte]))
                    slow.settimeout(0.1)
                    closed = slow.recv(100) == b""
                except TimeoutError:
                    continue
                except ConnectionError:
                    closed = True
                if closed:
                    break
            assert closed, "the trickling peer was never closed"
            assert time.monotonic() - started < 10
        assert "no handshake within 2s" in server_.log_text()


def _client_hello() -> bytes:
    """The first bytes a TLS client sends."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = _client_context().wrap_bio(incoming, outgoing)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@MODES
async def test_a_client_gets_in_within_a_second_while_a_thousand_connections_wait(
    tmp_path: Path, mode: str
) -> None:
    """1000 connections hold the server (idle, halfway through a TLS hello
    or a line, or sitting on their challenge); a legitimate client is still
    admitted (its answer sent, OK back) within 1 s, then runs code."""
    with socket_server(tmp_path, *_mode_args(mode)) as server_:
        partial = _client_hello()[:50] if mode == "tls" else b"0123456789"
        held: list[socket.socket] = []
        try:
            for index in range(968):
                conn = socket.create_connection(_host_port(server_.address), timeout=10)
                held.append(conn)
                if index % 3 == 1:
                    conn.sendall(partial)
            held.extend(_connect_held(server_.address, mode) for _ in range(32))
            established = [
                c
                for c in psutil.Process(server_.process.pid).net_connections(kind="inet")
                if c.status == psutil.CONN_ESTABLISHED
            ]
            assert len(established) >= 1000
            assert _admission_time(server_.address, mode) < 1.0
            async with asyncgw.Group() as group:
                gw = await group.makegateway(server_.spec())
                assert await gw.remote_exec("channel.send(6)").receive() == 6
        finally:
            for conn in held:
                conn.close()


def _admission_time(address: str, mode: str) -> float:
    """Seconds from connecting to ``OK``, the handshake done by hand as
    the client does it (the worker's start-up is not in it)."""
    started = time.monotonic()
    conn = socket.create_connection(_host_port(address), timeout=1)
    with _client_context().wrap_socket(conn) if mode == "tls" else conn as stream:
        binding = b""
        if isinstance(stream, ssl.SSLSocket):
            der = stream.getpeercert(binary_form=True)
            assert der is not None
            binding = server.tls_binding(der)
        lines = stream.makefile("rb")
        nonce = lines.readline().strip().removeprefix(server.CHALLENGE.strip()).strip()
        stream.sendall(server.answer(SECRET.encode(), nonce.decode(), binding).encode() + b"\n")
        assert lines.readline() == b"OK\n"
        elapsed = time.monotonic() - started
        lines.close()
    return elapsed


@MODES
async def test_the_client_reads_a_bounded_handshake(tmp_path: Path, mode: str) -> None:
    """A server that floods without a line end is dropped once the client
    has buffered a little, however much it would send."""
    tls, pin = _own_certificate(tmp_path, "flood") if mode == "tls" else (None, "")
    limit = 200 * 2**20
    sent = [0]

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while sent[0] < limit:
                writer.write(b"A" * 65536)
                sent[0] += 65536
                await writer.drain()

    async with _listen(flood, tls) as address, asyncgw.Group() as group:
        key = f"//socket_fingerprint={pin}" if pin else PLAINTEXT_KEY
        spec = f"socket={address}//socket_secret_file={_secret(tmp_path)}//connect_timeout=10"
        with pytest.raises(asyncgw.HostNotFound, match="bytes without a line end"):
            await group.makegateway(spec + key)
        assert sent[0] < limit


@MODES
async def test_a_silent_server_times_out_naming_it_and_the_stage(tmp_path: Path, mode: str) -> None:
    """A server that accepts and says nothing: asyncgw.TimeoutError naming
    the address and the stage (TLS handshake, or the challenge in plaintext)."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts for it
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        spec = f"socket={address}//socket_secret_file={_secret(tmp_path)}//connect_timeout=1"
        key = f"//socket_fingerprint=SHA256:{'A' * 43}" if mode == "tls" else PLAINTEXT_KEY
        stage = "TLS handshake" if mode == "tls" else "challenge"
        async with asyncgw.Group() as group:
            with pytest.raises(asyncgw.TimeoutError, match=f"{address}.*no {stage}"):
                await group.makegateway(spec + key)


def _secret(directory: Path) -> Path:
    path = directory / "client-secret"
    path.write_text(SECRET)
    return path
