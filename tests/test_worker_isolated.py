"""The remote worker needs nothing but the standard library: run it with
``python -I`` from a directory outside the package and talk raw frames."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from asyncgw import _bootstrap, _wire


def _exchange(proc: subprocess.Popen[bytes], frames: list[bytes], expect: int) -> list[tuple]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"".join(frames))
    proc.stdin.flush()
    assert proc.stdout.read(len(_wire.MAGIC)) == _wire.MAGIC
    decoder = _wire.FrameDecoder()
    got: list[tuple] = []
    while len(got) < expect:
        data = proc.stdout.read1(65536)
        assert data, f"worker ended early after {got}"
        got += decoder.feed(data)
    return got


def test_worker_runs_isolated_outside_the_package(tmp_path: Path) -> None:
    source = "import sys\nchannel.send(sorted(m for m in sys.modules if 'asyncgw' in m))"
    with subprocess.Popen(
        [sys.executable, "-I", "-c", _bootstrap.LOADER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=tmp_path,
    ) as proc:
        frames = _exchange(
            proc,
            [
                _bootstrap.bootstrap_payload({"id": "iso"}),
                _wire.encode_frame(_wire.EXEC, 1, _wire.dumps((source, None, None, False))),
            ],
            expect=3,
        )
        assert proc.stdin is not None
        proc.stdin.close()  # end of input: the worker exits
        assert proc.wait(timeout=10) == 0
    hello, data, close = frames
    assert hello[0] == _wire.HELLO
    assert _wire.loads(hello[2])["protocol"] == _wire.PROTOCOL_VERSION
    assert data[:2] == (_wire.DATA, 1)
    # The package itself was never imported remotely, only the shipped modules.
    assert _wire.loads(data[2]) == [
        "_asyncgw_remote", "_asyncgw_remote._wire", "_asyncgw_remote.remote",
        "_asyncgw_remote.remote.alias", "_asyncgw_remote.remote.channel",
        "_asyncgw_remote.remote.execmodel", "_asyncgw_remote.remote.reading",
        "_asyncgw_remote.remote.worker",
    ]  # fmt: skip
    assert close[:2] == (_wire.CLOSE, 1)


def test_bootstrap_input_ending_early_is_reported(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _bootstrap.LOADER],
        input=b"0000000100import",
        capture_output=True,
        cwd=tmp_path,
        timeout=30,
    )
    assert proc.returncode != 0
    assert b"bootstrap input ended early" in proc.stderr
