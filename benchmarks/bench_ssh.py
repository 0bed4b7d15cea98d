"""asyncgw's ssh transport beside execnet's ``ssh=`` gateway, in one run.

Starts a real OpenSSH sshd on a free loopback port (generated host and user
keys, default MaxSessions and MaxStartups), then measures, as bench_core
does (turns, rotation, warm-up dropped, medians):

- 1 ssh gateway: start, one round trip, exit;
- 8 ssh gateways to the one host: start, one round trip each, exit;
- the same 8 beside asyncgw's 1 gateway (the same samples, taken in the
  same turns): the 2nd..8th gateway are forked by a fork server on the
  host, so 8 should cost at most twice 1; asyncgw with every gateway in
  an exec session of its own (no fork server) beside it;
- round trip of a small int over an ssh gateway;
- one-way 1 MiB chunks over an ssh gateway.

asyncgw talks SSH itself (asyncssh, one shared connection per host);
execnet runs the ``ssh`` binary once per gateway. Needs root (sshd), sshd
and the ssh client. ``python benchmarks/bench_ssh.py [--quick]``.

The sshd sets ``SHLVL=1`` for its sessions (``SetEnv``), as bench_fleet's
do, so that the remote bash does not source ``~/.bashrc``: the rows
measure the clients and the interpreter, not the remote user's shell
start-up, which both contenders pay alike (on the machine this was
written on, root's ``~/.bashrc`` runs ``pyenv init``: about 130 processes
and 190-230 ms a session).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncssh
import execnet
from bench_core import (
    CHUNK,
    COUNT_BYTES,
    ECHO_LOOP,
    MIB,
    Config,
    asyncgw_start,
    execnet_start,
    pour,
    pour_blocking,
    render_table,
)
from harness import (
    EXIT_TIMEOUT,
    Recorder,
    Result,
    Target,
    blocking,
    measure,
    reap_children,
    render_targets,
)

import asyncgw
from asyncgw.transports import sshfork

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


class Host:
    """A running sshd and the specs that reach it."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.key = directory / "id_user"
        self.known = directory / "known_hosts"

    def asyncgw_spec(self) -> str:
        return (
            f"ssh=root@127.0.0.1:{self.port}//ssh_identity={self.key}"
            f"//ssh_known_hosts={self.known}//python={sys.executable}"
        )

    def execnet_spec(self) -> str:
        options = (
            f"-p {self.port} -i {self.key} -o UserKnownHostsFile={self.known} "
            "-o StrictHostKeyChecking=yes -o BatchMode=yes"
        )
        return f"ssh={options} root@127.0.0.1//python={sys.executable}"


@contextmanager
def sshd_host() -> Iterator[Host]:
    with tempfile.TemporaryDirectory(prefix="asyncgw-bench-sshd-") as name:
        directory = Path(name)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        host = Host(directory, port)
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        user_key = asyncssh.generate_private_key("ssh-ed25519")
        host_key.write_private_key(str(directory / "host_key"))
        user_key.write_private_key(str(host.key))
        for private in (directory / "host_key", host.key):
            private.chmod(0o600)
        (directory / "authorized_keys").write_bytes(user_key.export_public_key())
        public = host_key.export_public_key().decode().strip()
        host.known.write_text(f"[127.0.0.1]:{port} {public}\n")
        (directory / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {directory / 'host_key'}\n"
            f"PidFile {directory / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {directory / 'authorized_keys'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin yes\nStrictModes no\nUsePAM no\n"
            "SetEnv SHLVL=1\n"  # no ~/.bashrc: see the module's docstring
        )
        os.makedirs("/run/sshd", exist_ok=True)
        server = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(directory / "sshd_config")],
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("sshd did not start") from None
                    time.sleep(0.05)
            yield host
        finally:
            server.terminate()
            server.wait(10)


async def exec_sessions_start(count: int, spec: str) -> float:
    """asyncgw's start with every gateway in an exec session (no fork server)."""
    sshfork.enabled = False
    try:
        return await asyncgw_start(count, spec)
    finally:
        sshfork.enabled = True


async def bench_start(config: Config, host: Host) -> list[Result]:
    """1 and 8 gateways, both contenders, taking turns in one measurement."""
    aspec, espec = host.asyncgw_spec(), host.execnet_spec()
    samples = await measure(
        config.warmup,
        config.start_reps,
        {
            "asyncgw 1": lambda: asyncgw_start(1, aspec),
            "execnet 1": blocking(lambda: execnet_start(1, espec)),
            "asyncgw 8": lambda: asyncgw_start(8, aspec),
            "asyncgw 8 exec": lambda: exec_sessions_start(8, aspec),
            "execnet 8": blocking(lambda: execnet_start(8, espec)),
        },
    )
    ms = {name: [s * 1000 for s in values] for name, values in samples.items()}

    def row(workload: str, **names: str) -> Result:
        return Result(
            workload,
            "ms",
            higher_is_better=False,
            samples={column: ms[name] for column, name in names.items()},
        )

    return [
        row("1 ssh gateway: start+rt+exit", asyncgw="asyncgw 1", execnet="execnet 1"),
        row("8 ssh gateways, one host: start+rt+exit", asyncgw="asyncgw 8", execnet="execnet 8"),
        row(
            "8 gateways to one host (execnet: one at a time): start+rt+exit",
            **{
                "asyncgw": "asyncgw 8",
                "asyncgw, 1 gateway": "asyncgw 1",
                "asyncgw, exec sessions": "asyncgw 8 exec",
                "execnet": "execnet 8",
            },
        ),
    ]


async def bench_steady(config: Config, host: Host) -> list[Result]:
    n, chunks = config.roundtrips, config.mebibytes
    async with asyncgw.Group(exit_timeout=EXIT_TIMEOUT) as group:
        gw = await group.makegateway(host.asyncgw_spec())
        echo, sink = gw.remote_exec(ECHO_LOOP), gw.remote_exec(COUNT_BYTES)
        egroup = execnet.Group()
        try:
            egw = egroup.makegateway(host.execnet_spec())
            eecho, esink = egw.remote_exec(ECHO_LOOP), egw.remote_exec(COUNT_BYTES)

            async def asyncgw_rtt() -> float:
                started = time.perf_counter()
                for i in range(n):
                    await echo.send(i)
                    await echo.receive()
                return time.perf_counter() - started

            def execnet_rtt() -> float:
                started = time.perf_counter()
                for i in range(n):
                    eecho.send(i)
                    eecho.receive()
                return time.perf_counter() - started

            chunk_list = [CHUNK] * chunks

            rtt = await measure(
                config.warmup,
                config.steady_reps,
                {"asyncgw": asyncgw_rtt, "execnet": blocking(execnet_rtt)},
            )
            poured = await measure(
                config.warmup,
                config.steady_reps,
                {
                    "asyncgw": lambda: pour(sink, chunk_list, chunks * MIB),
                    "execnet": blocking(
                        pour_blocking("execnet", esink, lambda: chunk_list, chunks * MIB)
                    ),
                },
            )
        finally:
            egroup.terminate(timeout=EXIT_TIMEOUT)
    return [
        Result(
            "ssh round trip, small int",
            "us/msg",
            higher_is_better=False,
            samples={name: [s / n * 1e6 for s in values] for name, values in rtt.items()},
        ),
        Result(
            f"ssh one-way 1 MiB bytes, {chunks} MiB",
            "MiB/s",
            higher_is_better=True,
            samples={name: [chunks / s for s in values] for name, values in poured.items()},
        ),
    ]


async def run(config: Config) -> list[Result]:
    with sshd_host() as host:
        results = await bench_start(config, host)
        results += await bench_steady(config, host)
    return results


#: The issue's targets, asyncgw's median over execnet's (see docs/benchmarks.rst).
TARGETS = (
    Target("ssh: 1 gateway", "1 ssh gateway", "asyncgw", "execnet", 0.4),
    Target("ssh: 8 gateways, one host", "8 ssh gateways", "asyncgw", "execnet", 0.25),
    Target(
        "ssh: 8 gateways to one host",
        "8 gateways to one host",
        "asyncgw",
        "asyncgw, 1 gateway",
        2.0,
        note="8 gateways over 1, same run; the 2nd..8th forked on the host; execnet's "
        "ssh starts its gateways one at a time",
    ),
    Target("ssh: round trip", "ssh round trip", "asyncgw", "execnet", 0.8),
    Target("ssh: 1 MiB chunks", "ssh one-way 1 MiB", "asyncgw", "execnet", 2.0, at_most=False),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, smaller sizes")
    parser.add_argument(
        "--json", metavar="PATH", help="results file (default: docs/_results/ssh.json)"
    )
    args = parser.parse_args(argv)
    recorder = Recorder("ssh", peers=["execnet", "asyncssh"], quick=args.quick)
    recorder.notes.append(
        "execnet runs the ssh binary once per gateway, without ControlMaster (a new SSH "
        "connection, key exchange and authentication each); asyncgw shares one asyncssh "
        "connection per host, and forks a host's 2nd and later gateways there (a fork "
        "server reached over streamlocal channels; 'asyncgw, exec sessions': without it). "
        "execnet starts its gateways one at a time."
    )
    config = Config(
        start_reps=3 if args.quick else 5,
        steady_reps=3 if args.quick else 5,
        warmup=1,
        group_sizes=(8,),
        roundtrips=1_000 if args.quick else 3_000,
        ints=0,
        mebibytes=32 if args.quick else 128,
    )
    started = time.perf_counter()
    try:
        results = asyncio.run(run(config))
    finally:
        leftovers = reap_children()
    print(
        f"asyncgw {asyncgw.__version__} vs execnet {execnet.__version__} over a loopback "
        f"OpenSSH sshd; medians; total {time.perf_counter() - started:.0f}s"
    )
    print()
    print(render_table(results))
    document = recorder.document(results, TARGETS, config=config.__dict__)
    print()
    print("\n".join(render_targets(document)))
    recorder.write(results, TARGETS, config=config.__dict__, path=args.json)
    return 1 if leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
