"""The remote must not be able to run code locally: the local side builds
values of a closed set of types and never unpickles, evaluates or imports
anything a remote sends (SECURITY.md). The socket server's guarantees are
in test_socket.py, host-key checking in test_ssh.py and test_sshd.py."""

from __future__ import annotations

import ast
import pickle
import sys
from pathlib import Path

import pytest

import asyncgw
from asyncgw import _wire

from .fakeworker import SKIP_BOOTSTRAP

pytestmark = pytest.mark.anyio

PACKAGE = Path(asyncgw.__file__).parent
#: Modules that run in the remote interpreter, where running the caller's
#: code is the point; every other module runs locally.
REMOTE = PACKAGE / "remote"
FORBIDDEN_MODULES = {"pickle", "marshal", "shelve", "copyreg", "dill", "cloudpickle"}
FORBIDDEN_CALLS = {"eval", "exec", "__import__", "compile"}


def local_modules() -> list[Path]:
    return [path for path in PACKAGE.rglob("*.py") if REMOTE not in path.parents]


@pytest.mark.parametrize("path", local_modules(), ids=lambda path: path.name)
def test_local_code_has_no_way_to_run_received_data(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
            assert not {name.split(".")[0] for name in names} & FORBIDDEN_MODULES, (
                f"{path.name}:{node.lineno} imports {names}"
            )
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FORBIDDEN_CALLS
        ):
            pytest.fail(f"{path.name}:{node.lineno} calls {node.func.id}()")
        if isinstance(node, ast.Attribute) and node.attr == "loads":
            # json.loads is harmless; any other .loads must be the wire's.
            assert isinstance(node.value, ast.Name) and node.value.id in {"_wire", "json"}, (
                f"{path.name}:{node.lineno} uses {ast.unparse(node)}"
            )


async def test_a_hostile_worker_cannot_run_code_here(tmp_path: Path) -> None:
    """A remote speaking the protocol sends a pickle that would create a file
    if unpickled, undecodable values and a channel id it never opened; the
    local side hands out bytes, raises LoadError, and the file never appears."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    frames = [
        _wire.encode_frame(_wire.DATA, 1, _wire.dumps(pickle.dumps(Exploit()))),
        _wire.encode_frame(_wire.DATA, 1, pickle.dumps(Exploit())),  # not a wire value
        _wire.encode_frame(_wire.DATA, 1, b"\x63os\nsystem\n"),  # unknown tag 'c'
        _wire.encode_frame(_wire.DATA, 1, _wire.dumps("ok")),
    ]
    fake = tmp_path / "hostile-worker"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "from asyncgw import _wire\n"
        "hello = _wire.dumps({'protocol': _wire.PROTOCOL_VERSION, 'pid': os.getpid(),"
        " '__reduce__': 'exec'})\n"
        "out = sys.stdout.buffer\n"
        "out.write(_wire.MAGIC + _wire.encode_frame(_wire.HELLO, 0, hello))\n"
        "out.flush()\n" + SKIP_BOOTSTRAP + "sys.stdin.buffer.read(1)  # wait for the first frame\n"
        f"out.write({b''.join(frames)!r})\n"
        "out.flush()\n"
        "sys.stdin.buffer.read()  # until end of input\n"
    )
    fake.chmod(0o755)
    async with asyncgw.Group(exit_timeout=2.0) as group:
        gw = await group.makegateway(f"popen//python={fake}")
        channel = gw.remote_exec("pass")
        assert channel.id == 1
        first = await channel.receive(timeout=10)
        assert type(first) is bytes  # handed over as data, never loaded
        for _ in range(2):
            with pytest.raises(asyncgw.LoadError):
                await channel.receive(timeout=10)
        assert await channel.receive(timeout=10) == "ok"
        assert gw.is_alive  # bad values close nothing
        await group.terminate(timeout=0.5)  # the fake ignores TERMINATE: killed
    assert not marker.exists()
