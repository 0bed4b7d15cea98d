"""asyncgw's socket transport over TLS, beside plaintext and beside ssh, in one run.

What TLS costs the socket transport, and how it compares with the other
remote transport: three gateways to this machine, each to a real server
process on a free loopback port:

- ``tls``: ``socket=`` to ``python -m asyncgw serve`` (TLS, the server's
  fingerprint pinned; the server relays between TLS and the worker's pipes);
- ``plaintext``: ``socket=...//socket_plaintext`` to ``asyncgw serve
  --plaintext`` (the admitted socket itself is the worker's stdin and
  stdout: no relay);
- ``ssh``: ``ssh=`` to a loopback OpenSSH sshd (bench_ssh's, generated keys).

Workloads, as bench_core measures them (taking turns, rotation, warm-up
dropped, medians): start+round trip+exit of one gateway; the round trip of
a small int; one-way 1 MiB chunks. Ratios are TLS's median over the
other's. The results, every sample included, go to
``docs/_results/socket.json`` (``--json PATH`` elsewhere). Needs root and sshd (for the ssh
column). ``python benchmarks/bench_socket.py [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench_core import (
    CHUNK,
    COUNT_BYTES,
    ECHO_LOOP,
    MIB,
    Config,
    pour,
)
from bench_ssh import sshd_host
from harness import (
    EXIT_TIMEOUT,
    Recorder,
    Result,
    Sampler,
    format_cell,
    format_ratio,
    format_rows,
    measure,
    reap_children,
)

import asyncgw

NAMES = ("tls", "plaintext", "ssh")
SECRET = "bench-socket-secret-0123456789"


@dataclass
class Servers:
    """The specs that reach each server, and the TLS version the TLS one speaks."""

    specs: dict[str, str]
    tls_version: str


def tls_version(spec: str) -> str:
    """The TLS version a client of ours negotiates with the server of ``spec``."""
    host, port = spec.split("//")[0].removeprefix("socket=").rsplit(":", 1)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with context.wrap_socket(socket.create_connection((host, int(port)), timeout=10)) as conn:
        return conn.version() or "?"


@contextlib.contextmanager
def socket_server(directory: Path, *args: str) -> Iterator[str]:
    """``asyncgw serve`` on a free port; yields the spec that reaches it."""
    secret = directory / "secret"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    process = subprocess.Popen(
        [sys.executable, "-m", "asyncgw", "serve", "--port", "0", "--secret-file", str(secret),
         "--cert", str(directory / "cert.pem"), "--key", str(directory / "key.pem"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        address = process.stdout.readline().split()[-1]
        second = process.stdout.readline().split()
        key = (
            f"socket_fingerprint={second[1]}" if second[0] == "fingerprint" else "socket_plaintext"
        )
        yield f"socket={address}//socket_secret_file={secret}//{key}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the server and its workers
        process.wait(EXIT_TIMEOUT)


@contextlib.contextmanager
def servers() -> Iterator[Servers]:
    with (
        tempfile.TemporaryDirectory(prefix="asyncgw-bench-socket-") as name,
        sshd_host() as ssh,
    ):
        directory = Path(name)
        (directory / "tls").mkdir()
        (directory / "plain").mkdir()
        with (
            socket_server(directory / "tls") as tls,
            socket_server(directory / "plain", "--plaintext") as plain,
        ):
            specs = {"tls": tls, "plaintext": plain, "ssh": ssh.asyncgw_spec()}
            yield Servers(specs, tls_version(tls))


async def start_once(spec: str) -> float:
    started = time.perf_counter()
    async with asyncgw.Group(exit_timeout=EXIT_TIMEOUT) as group:
        gateway = await group.makegateway(spec)
        channel = gateway.remote_exec("channel.send(channel.receive())")
        await channel.send(1)
        if await channel.receive() != 1:
            raise AssertionError("echo failed")
    return time.perf_counter() - started


async def bench_start(config: Config, specs: dict[str, str]) -> Result:
    samples = await measure(
        config.warmup,
        config.start_reps,
        {name: (lambda spec=spec: start_once(spec)) for name, spec in specs.items()},
    )
    return Result(
        "1 gateway: start+rt+exit",
        "ms",
        higher_is_better=False,
        samples={name: [s * 1000 for s in values] for name, values in samples.items()},
    )


async def bench_steady(config: Config, specs: dict[str, str]) -> list[Result]:
    n, chunks = config.roundtrips, config.mebibytes
    chunk_list = [CHUNK] * chunks
    async with asyncgw.Group(exit_timeout=EXIT_TIMEOUT) as group:
        echoes, sinks = {}, {}
        for name, spec in specs.items():
            gateway = await group.makegateway(spec)
            echoes[name] = gateway.remote_exec(ECHO_LOOP)
            sinks[name] = gateway.remote_exec(COUNT_BYTES)

        def round_trips(channel: asyncgw.Channel) -> Sampler:
            async def sample() -> float:
                started = time.perf_counter()
                for i in range(n):
                    await channel.send(i)
                    if await channel.receive() != i:
                        raise AssertionError("echo failed")
                return time.perf_counter() - started

            return sample

        rtt = await measure(
            config.warmup, config.steady_reps, {name: round_trips(c) for name, c in echoes.items()}
        )
        poured = await measure(
            config.warmup,
            config.steady_reps,
            {
                name: (lambda sink=sink: pour(sink, chunk_list, chunks * MIB))
                for name, sink in sinks.items()
            },
        )
    return [
        Result(
            "round trip, small int",
            "us/msg",
            higher_is_better=False,
            samples={name: [s / n * 1e6 for s in values] for name, values in rtt.items()},
        ),
        Result(
            f"one-way 1 MiB bytes, {chunks} MiB",
            "MiB/s",
            higher_is_better=True,
            samples={name: [chunks / s for s in values] for name, values in poured.items()},
        ),
    ]


async def run(config: Config) -> tuple[list[Result], str]:
    with servers() as found:
        results = [await bench_start(config, found.specs)]
        results += await bench_steady(config, found.specs)
    return results, found.tls_version


def render_table(results: list[Result]) -> str:
    header = ["workload", "unit", "better", *NAMES, "tls/plaintext", "tls/ssh"]
    rows = [
        [
            result.workload,
            result.unit,
            "higher" if result.higher_is_better else "lower",
            *(format_cell(result, name) for name in NAMES),
            format_ratio(result.ratio("plaintext", mine_name="tls")),
            format_ratio(result.ratio("ssh", mine_name="tls")),
        ]
        for result in results
    ]
    return format_rows(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, smaller sizes")
    parser.add_argument(
        "--json", metavar="PATH", help="results file (default: docs/_results/socket.json)"
    )
    args = parser.parse_args(argv)
    recorder = Recorder("socket", peers=["asyncssh"], quick=args.quick)
    config = Config(
        start_reps=3 if args.quick else 7,
        steady_reps=3 if args.quick else 7,
        warmup=1,
        group_sizes=(),
        roundtrips=1_000 if args.quick else 3_000,
        ints=0,
        mebibytes=32 if args.quick else 128,
    )
    load_before = recorder.load_start[0]
    started = time.perf_counter()
    try:
        results, version = asyncio.run(run(config))
    finally:
        leftovers = reap_children()
    wall = time.perf_counter() - started
    lines = [
        f"asyncgw {asyncgw.__version__} socket transport: TLS beside plaintext and ssh"
        f" (loopback OpenSSH sshd); {time.strftime('%Y-%m-%d')}",
        f"Python {platform.python_version()}, {platform.platform()}, {os.cpu_count()} cpus;"
        f" load average (1 min) {load_before:.2f} before, {os.getloadavg()[0]:.2f} after;"
        f" {wall:.0f}s",
        f"median of {config.steady_reps} rounds after {config.warmup} warm-up, taking turns;"
        f" ±: half the min-max range; {config.roundtrips:,} round trips,"
        f" {config.mebibytes} MiB per sample",
        "",
        render_table(results),
        "",
        f"tls: socket= to `asyncgw serve` ({version} as negotiated, fingerprint pinned; the"
        " server relays between TLS and the worker's pipes).",
        "plaintext: socket=...//socket_plaintext to `asyncgw serve --plaintext` (the socket"
        " is the worker's stdin/stdout).",
        "ssh: ssh= to a loopback OpenSSH sshd (asyncssh client). Ratios: TLS's median over"
        " the other's (for MiB/s above 1 means TLS is faster).",
    ]
    print("\n".join(lines))
    recorder.notes.append(lines[-3] + " " + lines[-2] + " " + lines[-1])
    recorder.write(results, config={**config.__dict__, "tls": version}, path=args.json)
    return 1 if leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
