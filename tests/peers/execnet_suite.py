"""Run execnet's own test suite against ``asyncgw.sync``.

``nox -s execnet_suite`` downloads execnet's sdist and calls this with it.
We unpack it, put a package named ``execnet`` first on the path whose
``__init__`` is asyncgw's alias (``asyncgw.compat.install()``:
``import execnet`` gives :mod:`asyncgw.sync`; see ``execnet_shim``), and run the six test files
of execnet's ``testing/`` that exercise its public API, over popen,
``popen//via=`` (execnet's "proxy" gateway) and, where OpenSSH's sshd
exists, ssh to a real sshd on loopback (a throw-away ``HOME`` holds the
``~/.ssh/config`` entry execnet's ``--gx ssh=`` fixture names).

The gate is an explicit list, ``execnet_expected.toml`` beside this file:
every test expected to fail, each with its reason (execnet internal, by
design, environment). The run fails on any other failure, and on an
expected failure that passes (the list must stay true). Outcomes come from
``outcomes_plugin`` (JUnit XML would count an XPASS as passed: here XPASS
is counted apart). ``--results`` writes the counts as JSON, with execnet's
version and the date, for the docs (``docs/_results/execnet_suite.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fnmatch
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEST_FILES = [
    "test_channel.py",
    "test_gateway.py",
    "test_multi.py",
    "test_xspec.py",
    "test_rsync.py",
    "test_termination.py",
]
SHIM = Path(__file__).parent / "execnet_shim"
SSH_ALIAS = "asyncgw-sshd"
EXPECTED = Path(__file__).parent / "execnet_expected.toml"
#: The reasons a test may be expected to fail (each entry names one).
REASONS = ("execnet internal", "by design", "environment")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _sshd(home: Path) -> Iterator[bool]:
    """A loopback sshd and a ``~/.ssh/config`` naming it ``asyncgw-sshd``
    (yields False, starting nothing, where sshd cannot run here)."""
    from tests.realsshd import SSHD
    from tests.sshserver import Keys

    if not os.path.exists(SSHD) or os.geteuid() != 0:
        yield False
        return
    from tests.realsshd import run_sshd

    keys_dir = home / "keys"
    keys_dir.mkdir()
    keys = Keys.generate(keys_dir)
    port = _free_port()
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "known_hosts").write_text(keys.known_hosts(port).read_text())
    (ssh / "config").write_text(
        f"Host {SSH_ALIAS}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
        f"  IdentityFile {keys.user_key_path}\n"
        f"  UserKnownHostsFile {ssh / 'known_hosts'}\n"
    )
    # OpenSSH's client (execnet runs it) reads the passwd entry's home, not
    # $HOME: an `ssh` first on PATH points it at the same config.
    bin_dir = home / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh") or "ssh"} -F {ssh / "config"} "$@"\n')
    wrapper.chmod(0o755)
    sshd_dir = home / "sshd"
    sshd_dir.mkdir()
    with run_sshd(keys, sshd_dir, "127.0.0.1", port):
        yield True


def load_expected(path: Path) -> list[dict[str, Any]]:
    """The expected-failure entries of ``path``: each has ``reason`` (one of
    :data:`REASONS`), ``why`` and ``tests`` (test ids; a trailing ``[*]``
    stands for every parametrization of that test)."""
    entries: list[dict[str, Any]] = tomllib.loads(path.read_text())["expected"]
    for entry in entries:
        if entry.get("reason") not in REASONS or not entry.get("why") or not entry.get("tests"):
            raise SystemExit(f"{path}: entry needs reason in {REASONS}, why and tests: {entry}")
    return entries


def _matches(pattern: str, test_id: str) -> bool:
    if pattern.endswith("[*]"):
        return test_id == pattern[:-3] or fnmatch.fnmatchcase(test_id, pattern[:-3] + "[[]*")
    return test_id == pattern


def judge(
    outcomes: dict[str, dict[str, str]], entries: list[dict[str, Any]], files: list[str]
) -> tuple[dict[str, int], list[str], list[str]]:
    """Counts, unexpected failures and stale expectations (an expected
    failure that passed, or an entry that names no test of ``files``)."""
    patterns = [(str(test), entry) for entry in entries for test in entry["tests"]]
    counts = dict.fromkeys(
        ["passed", "expected_failures", "xpassed", "xfailed", "skipped", "unexpected_failures"], 0
    )
    unexpected, stale = [], []
    used: set[str] = set()
    for test_id, result in sorted(outcomes.items()):
        outcome, message = result["outcome"], result["message"]
        hits = [pattern for pattern, _ in patterns if _matches(pattern, test_id)]
        used.update(hits)
        if outcome in ("failed", "error"):
            if hits:
                counts["expected_failures"] += 1
            else:
                counts["unexpected_failures"] += 1
                unexpected.append(f"{outcome.upper():7} {test_id}: {message}")
        elif outcome in ("passed", "xpassed") and hits:
            stale.append(f"{outcome.upper():7} {test_id}: listed as an expected failure")
        if outcome in ("passed", "xpassed", "xfailed", "skipped"):
            counts[outcome] += 1
    run = {f"testing/{name}" for name in files}
    for pattern, _ in patterns:
        if pattern not in used and pattern.partition("::")[0] in run:
            stale.append(f"NO TEST {pattern}: listed, but no such test ran")
    return counts, unexpected, stale


def entry_failures(
    outcomes: dict[str, dict[str, str]], entries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each entry of the list with the number of tests of this run that
    failed under it, for the docs (the table on docs/sync.rst)."""
    found = []
    for entry in entries:
        failed = sum(
            1
            for test_id, result in outcomes.items()
            if result["outcome"] in ("failed", "error")
            and any(_matches(str(pattern), test_id) for pattern in entry["tests"])
        )
        names = sorted({str(t).rpartition("::")[2].partition("[")[0] for t in entry["tests"]})
        found.append(
            {"reason": entry["reason"], "why": entry["why"], "tests": names, "failed": failed}
        )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sdist", type=Path, help="execnet's sdist (.tar.gz)")
    parser.add_argument("--expected", type=Path, default=EXPECTED, help="expected failures")
    parser.add_argument("--results", type=Path, help="write the counts here (JSON)")
    parser.add_argument("--outcomes", type=Path, help="keep every test's outcome here (JSON)")
    parser.add_argument("--files", nargs="+", default=TEST_FILES, help="of testing/")
    parser.add_argument(
        "--execnet", action="store_true", help="run execnet itself instead (the peer, beside us)"
    )
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()
    entries = load_expected(args.expected)
    version = args.sdist.name.removeprefix("execnet-").removesuffix(".tar.gz")
    with tempfile.TemporaryDirectory(prefix="execnet-suite-") as tmp:
        root = Path(tmp)
        with tarfile.open(args.sdist) as archive:
            archive.extractall(root, filter="data")
        (source,) = root.glob("execnet-*")
        home = root / "home"
        home.mkdir()
        outcomes_path = root / "outcomes.json"
        with _sshd(home) as have_sshd:
            gx = ["--gx", f"ssh={SSH_ALIAS}"] if have_sshd else []
            env = {
                # PYTHONDONTWRITEBYTECODE (set on some machines, ours among
                # them) would reach the workers and fail test_dont_write_bytecode
                # on execnet and asyncgw alike: not what the gate measures.
                **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
                # Without the shim the tests import execnet itself.
                "PYTHONPATH": os.pathsep.join(
                    ([] if args.execnet else [str(SHIM)]) + [str(Path.cwd())]
                ),
                "HOME": str(home),
                "PATH": os.pathsep.join([str(home / "bin"), os.environ.get("PATH", "")]),
                "ASYNCGW_OUTCOMES": str(outcomes_path),
            }
            command = [
                sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                "-p", "tests.peers.outcomes_plugin", "-o", "timeout=60",
                *gx, *[f"testing/{name}" for name in args.files], *args.pytest_args,
            ]  # fmt: skip
            print("+", " ".join(command), flush=True)
            subprocess.run(command, cwd=source, env=env, check=False)
        outcomes = json.loads(outcomes_path.read_text())
        if args.outcomes:
            args.outcomes.write_text(json.dumps(outcomes, indent=1, sort_keys=True) + "\n")
    counts, unexpected, stale = judge(outcomes, [] if args.execnet else entries, args.files)
    subject = "execnet itself" if args.execnet else "asyncgw.sync"
    print(
        f"\nexecnet {version}'s suite on {subject}:",
        ", ".join(f"{n} {k}" for k, n in counts.items()),
    )
    if not have_sshd:
        print("(no sshd here: the ssh-parametrized tests were skipped)")
    if args.execnet:
        for line in unexpected:
            print("  " + line)
        return 0
    if unexpected:
        print(f"{len(unexpected)} failures not in {args.expected.name}:")
        print("\n".join("  " + line for line in unexpected))
    if stale:
        print(f"{len(stale)} entries of {args.expected.name} are no longer true:")
        print("\n".join("  " + line for line in stale))
    ok = not unexpected and not stale
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        results = {
            "benchmark": "execnet_suite",
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "execnet_version": version,
            "python": platform.python_version(),
            "files": [f"testing/{name}" for name in args.files],
            "ssh": have_sshd,
            "counts": counts,
            "stale_expected": len(stale),
            "expected": entry_failures(outcomes, [] if args.execnet else entries),
            "gate": "passed" if ok else "failed",
        }
        args.results.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.results}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
