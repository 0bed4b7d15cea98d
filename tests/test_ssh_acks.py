"""The pool's prompt acknowledgements (sshpool._PromptAcks): for a new TCP
connection's first moments every read is acknowledged at once
(TCP_QUICKACK) before asyncssh sees it, everything else passes through
unchanged, and then asyncssh reads its transport again; where there is no
TCP socket of ours, the connection is left as it is."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from asyncgw.transports import sshpool

from .sshserver import Keys, ssh_server

pytestmark = pytest.mark.anyio

quickack = pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux's")


class Inner(asyncio.Protocol):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def data_received(self, data: bytes) -> None:
        self.calls.append(("data", data))

    def eof_received(self) -> bool:
        self.calls.append(("eof", None))
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append(("lost", exc))

    def pause_writing(self) -> None:
        self.calls.append(("pause", None))

    def resume_writing(self) -> None:
        self.calls.append(("resume", None))


class Sock:
    def __init__(self, calls: list[tuple[str, Any]]) -> None:
        self.calls = calls

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.calls.append(("ack", (level, option, value)))


def test_each_read_is_acknowledged_before_it_is_handed_on() -> None:
    inner = Inner()
    shim = sshpool._PromptAcks(inner, Sock(inner.calls), 12)
    shim.data_received(b"a")
    shim.data_received(b"b")
    assert shim.eof_received() is True
    shim.pause_writing()
    shim.resume_writing()
    error = OSError("gone")
    shim.connection_lost(error)
    ack = ("ack", (socket.IPPROTO_TCP, 12, 1))
    assert inner.calls == [
        ack,
        ("data", b"a"),
        ack,
        ("data", b"b"),
        ("eof", None),
        ("pause", None),
        ("resume", None),
        ("lost", error),
    ]


def test_a_connection_without_a_transport_of_ours_is_left_alone() -> None:
    class Conn:
        _transport = None

        def get_extra_info(self, name: str) -> None:
            return None

    conn = Conn()
    sshpool._acknowledge_promptly(conn)  # type: ignore[arg-type]
    assert conn._transport is None


def _target(ssh_keys: Keys, port: int) -> sshpool.SSHTarget:
    options = (
        ("ssh_identity", str(ssh_keys.user_key_path)),
        ("ssh_known_hosts", str(ssh_keys.known_hosts(port))),
    )
    return sshpool.SSHTarget("127.0.0.1", port, None, options)


@quickack
async def test_a_new_pooled_connection_acknowledges_promptly(ssh_keys: Keys) -> None:
    async with ssh_server(ssh_keys) as (port, _):
        slot = await sshpool.acquire(_target(ssh_keys, port), 10)
        conn = slot.conn
        try:
            transport = conn._transport  # asyncssh's; what the pool wrapped
            assert isinstance(transport.get_protocol(), sshpool._PromptAcks)
            result = await conn.run("echo hello; echo there >&2", check=True)
            assert result.stdout == "hello\n" and result.stderr == "there\n"
            assert isinstance(transport.get_protocol(), sshpool._PromptAcks)
        finally:
            slot.release()  # its last session: the connection closes
        async with asyncio.timeout(10):
            await conn.wait_closed()  # its loss reached asyncssh through the shim


@quickack
async def test_then_asyncssh_reads_its_transport_again(
    ssh_keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sshpool, "PROMPT_ACKS_SECONDS", 0)  # aside at the next turn
    async with ssh_server(ssh_keys) as (port, _):
        slot = await sshpool.acquire(_target(ssh_keys, port), 10)
        conn = slot.conn
        try:
            assert (await conn.run("echo hello", check=True)).stdout == "hello\n"
            assert conn._transport.get_protocol() is conn
            assert (await conn.run("echo again", check=True)).stdout == "again\n"
        finally:
            slot.release()
        async with asyncio.timeout(10):
            await conn.wait_closed()
