"""Errors that name what is wrong: an ssh port out of range is a
``SpecError`` naming the key, before any connection is tried."""

from __future__ import annotations

import pathlib

import pytest

import asyncgw

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("port", ["99999", "65536", "0", "+22", "2_2", "-1", "1" * 30])
@pytest.mark.parametrize("key", ["ssh", "ssh_jump"])
async def test_a_port_out_of_range_is_a_spec_error_naming_the_key(key: str, port: str) -> None:
    spec = "ssh=127.0.0.1:22//ssh_jump=127.0.0.1:22//connect_timeout=5".replace(
        f"{key}=127.0.0.1:22", f"{key}=127.0.0.1:{port}"
    )
    async with asyncgw.Group() as group:
        with pytest.raises(asyncgw.SpecError, match=rf"key '{key}' has a bad port.*1 to 65535"):
            await group.makegateway(spec)


@pytest.mark.parametrize("text", ["node1:99999", "root@node1:0", "[::1]:70000"])
def test_a_host_port_out_of_range_names_it(text: str) -> None:
    from asyncgw.fleet import Host

    with pytest.raises(ValueError, match="1 to 65535"):
        Host.parse(text)
    with pytest.raises(ValueError, match="1 to 65535"):
        Host("node1", port=99999)


@pytest.mark.parametrize("problem", ["missing", "unreadable", "garbage", "encrypted"])
async def test_a_bad_identity_file_is_a_spec_error_naming_it(
    problem: str, tmp_path: pathlib.Path
) -> None:
    import os

    import asyncssh

    key = tmp_path / "id_test"
    if problem == "garbage":
        key.write_text("this is not a key\n")
    elif problem == "encrypted":
        secret = asyncssh.generate_private_key("ssh-ed25519")
        key.write_bytes(secret.export_private_key("pkcs8-pem", passphrase="sesame"))
    elif problem == "unreadable":
        key.write_text("x")
        key.chmod(0)
        if os.access(key, os.R_OK):  # root reads anything: a directory instead
            key.unlink()
            key.mkdir()
    spec = f"ssh=127.0.0.1:1//ssh_identity={key}//connect_timeout=5"
    async with asyncgw.Group() as group:
        with pytest.raises(asyncgw.SpecError, match="ssh_identity") as info:
            await group.makegateway(spec)
    assert str(key) in str(info.value)


def test_the_cli_refuses_a_missing_key_with_rc_2(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from asyncgw.cli import main

    missing = tmp_path / "no_such_key"
    with pytest.raises(SystemExit) as info:
        rc = main(["run", "127.0.0.1:1", "-i", str(missing), "--", "true"])
        raise SystemExit(rc)
    assert info.value.code == 2
    assert str(missing) in capsys.readouterr().err
