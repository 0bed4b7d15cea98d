"""cmd transports: any argv that yields a Python, and the docker, kubectl
and sudo shorthands (checked through stand-in commands on PATH that do what
the real clients do with the argv: run the interpreter part)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import asyncgw
from asyncgw._bootstrap import LOADER
from asyncgw.transports.cmd import cmd_argv

pytestmark = pytest.mark.anyio

#: Each stand-in records what it was asked for, drops its own arguments and
#: runs the rest, as `docker exec -i C ...`, `kubectl exec -i P -- ...` and
#: `sudo -n [-u U] ...` would.
STAND_INS = {
    "docker": 'export STAND_IN="docker $1 $2 $3"; shift 3; exec "$@"',
    "kubectl": 'export STAND_IN="kubectl $1 $2 $3 $4"; shift 4; exec "$@"',
    "sudo": 'export STAND_IN="sudo $*"; shift; [ "$1" = -u ] && shift 2; exec "$@"',
}


@pytest.fixture
def stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, body in STAND_INS.items():
        script = tmp_path / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{Path(sys.executable).parent}:/usr/bin:/bin")
    return tmp_path


@pytest.mark.parametrize(
    ("spec", "argv"),
    [
        ("cmd=nice -n 5 python3", ["nice", "-n", "5", "python3"]),
        ("docker=c1", ["docker", "exec", "-i", "c1", "python3"]),
        (
            "docker=c1//python=python3.12 -X dev",
            ["docker", "exec", "-i", "c1", "python3.12", "-X", "dev"],
        ),
        ("kubectl=pod-0", ["kubectl", "exec", "-i", "pod-0", "--", "python3"]),
        ("sudo=bob//python=/usr/bin/python3", ["sudo", "-n", "-u", "bob", "/usr/bin/python3"]),
        ("sudo", ["sudo", "-n", sys.executable]),
    ],
)  # fmt: skip
def test_argv(spec: str, argv: list[str]) -> None:
    assert cmd_argv(asyncgw.XSpec(spec)) == [*argv, "-c", LOADER]


def test_empty_command_is_refused() -> None:
    with pytest.raises(asyncgw.SpecError, match="empty command"):
        cmd_argv(asyncgw.XSpec("cmd= "))


@pytest.mark.parametrize(
    ("spec", "recorded"),
    [
        (f"docker=box//python={sys.executable}", "docker exec -i box"),
        (f"kubectl=pod-7//python={sys.executable}", "kubectl exec -i pod-7 --"),
        (f"sudo=nobody//python={sys.executable}", "sudo -n -u nobody"),
    ],
)
async def test_shorthands_run_a_worker(
    stand_ins: Path, group: asyncgw.Group, spec: str, recorded: str
) -> None:
    gw = await group.makegateway(spec)
    channel = gw.remote_exec("import os; channel.send(os.environ['STAND_IN'])")
    assert (await channel.receive()).startswith(recorded)


async def test_missing_command_is_host_not_found(group: asyncgw.Group) -> None:
    with pytest.raises(asyncgw.HostNotFound, match="no-such-client"):
        await group.makegateway("cmd=no-such-client python3")


async def test_command_that_is_not_python_fails_clearly(group: asyncgw.Group) -> None:
    with pytest.raises(asyncgw.BootstrapError, match="exit status"):
        await group.makegateway("cmd=false")
