"""Developer sessions: ``nox -s tests lint docs examples bench``."""

from __future__ import annotations

import glob
import os
import pathlib

import nox

nox.options.sessions = ["tests-3.11", "lint"]
nox.options.default_venv_backend = "venv"


#: This side's interpreters: the whole suite runs on each (``nox -s tests-3.12``).
LOCAL_PYTHONS = ["3.11", "3.12", "3.13"]


def _release(path: str) -> tuple[int, ...]:
    """``3.9.18`` of ``<root>/versions/3.9.18/bin/python3.9``, for sorting."""
    name = pathlib.Path(path).parent.parent.name
    return tuple(int(part) if part.isdigit() else -1 for part in name.split("."))


def _find_pyenv_interpreters(versions: list[str]) -> None:
    """Put the newest pyenv release of each version first on PATH, where nox
    looks for ``python3.X``: pyenv's shims run only the versions selected with
    ``pyenv global``, and nox would call the others missing. Found, not named:
    elsewhere PATH is left as it is (and CI fails on a missing one)."""
    roots = [os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv")]
    found = []
    for version in versions:
        for root in dict.fromkeys(filter(None, roots)):
            pattern = os.path.join(glob.escape(root), "versions", f"{version}.*", "bin")
            pythons = glob.glob(os.path.join(pattern, f"python{version}"))
            if pythons:
                found.append(os.path.dirname(max(pythons, key=_release)))
                break
    os.environ["PATH"] = os.pathsep.join([*found, os.environ.get("PATH", "")])


_find_pyenv_interpreters(LOCAL_PYTHONS)
#: The far side's: the worker of every transport-independent test runs on each
#: (``nox -s far_side -- 3.9``); 3.11 is this side's own, in every run.
WORKER_PYTHONS = ["3.9", "3.10", "3.12", "3.13"]


@nox.session(python=LOCAL_PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite (real subprocesses; ssh tests start their own servers)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def far_side(session: nox.Session) -> None:
    """Every transport-independent test with the worker on each of
    WORKER_PYTHONS in turn (``-- 3.9 3.13`` for some), one pytest run each.
    The interpreters are found by tests/conftest.py; a missing one skips
    (``ASYNCGW_REQUIRE_MATRIX=1``: fails)."""
    session.install("-e", ".[test]")
    versions = [arg for arg in session.posargs if not arg.startswith("-")] or WORKER_PYTHONS
    options = [arg for arg in session.posargs if arg.startswith("-")]
    for version in versions:
        session.run("pytest", "-q", f"--worker-python={version}", *options)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff over everything, mypy --strict over the package, and the import
    contracts of .importlinter (the layers: docs/architecture.rst)."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    session.run("lint-imports")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Build the Sphinx docs, warnings as errors (ASYNCGW_DOCS_ONLINE=1: intersphinx)."""
    session.install("-e", ".[docs]")
    session.run("python", "-m", "sphinx", "-W", "-b", "html", "docs", "docs/_build/html")


@nox.session(python="3.11")
def examples(session: nox.Session) -> None:
    """Run every example script."""
    session.install("-e", ".")
    for script in sorted(__import__("pathlib").Path("examples").glob("*.py")):
        session.run("python", str(script))


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """asyncgw beside execnet and the raw lower bound; ``-- --quick`` for a short run."""
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/bench_core.py", *session.posargs)


@nox.session(python="3.11")
def bench_ssh(session: nox.Session) -> None:
    """ssh gateways beside execnet's ssh= over a loopback sshd (needs root and sshd)."""
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/bench_ssh.py", *session.posargs)


@nox.session(python="3.11")
def bench_socket(session: nox.Session) -> None:
    """The socket transport over TLS beside plaintext and beside ssh (needs root and sshd)."""
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/bench_socket.py", *session.posargs)


@nox.session(python="3.11")
def bench_scaling(session: nox.Session) -> None:
    """Time and memory for 1-128 gateways and 1-10 000 channels (docs/_results/scaling.json;
    the docs draw its charts when they are built)."""
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/bench_scaling.py", *session.posargs)


#: The execnet release whose own tests (testing/ of its sdist) asyncgw.sync must pass.
EXECNET_VERSION = "2.1.2"


@nox.session(python="3.11")
def execnet_suite(session: nox.Session) -> None:
    """execnet's own tests against asyncgw.sync: its sdist, downloaded now,
    over popen, popen//via= and (as root, with sshd) a loopback sshd. Gated
    by tests/peers/execnet_expected.toml; writes docs/_results/execnet_suite.json."""
    session.install("-e", ".[test]")
    sdists = session.create_tmp()
    session.run(
        "python", "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        f"execnet=={EXECNET_VERSION}", "-d", sdists,
    )  # fmt: skip
    sdist = next(__import__("pathlib").Path(sdists).glob("execnet-*.tar.gz"))
    session.run(
        "python", "-m", "tests.peers.execnet_suite", str(sdist),
        "--results", "docs/_results/execnet_suite.json", *session.posargs,
    )  # fmt: skip


@nox.session(python="3.11")
def bench_xdist(session: nox.Session) -> None:
    """pytest -n 2 and -n 8 on 2000 generated tests: asyncgw.xdist beside execnet."""
    session.install("-e", ".[bench]", "pytest-xdist")
    session.run("python", "benchmarks/bench_xdist.py", *session.posargs)


@nox.session(python="3.11")
def fuzz(session: nox.Session) -> None:
    """Coverage-guided fuzzing of the wire decoders (``-- -max_total_time=600``)."""
    session.install("-e", ".", "atheris")
    args = session.posargs or ["-max_total_time=300"]
    session.run("python", "fuzzing/fuzz_wire.py", "-max_len=4096", *args, "fuzzing/corpus")


@nox.session(python="3.11")
def bench_fleet(session: nox.Session) -> None:
    """hostname and a 50 MB put on 32 namespace hosts: asyncgw.fleet beside
    parallel-ssh, fabric and asyncssh + gather (needs root, iproute2 and sshd)."""
    session.install("-e", ".[test]", "parallel-ssh", "fabric")
    session.run("python", "benchmarks/bench_fleet.py", *session.posargs)


@nox.session(python="3.11")
def bench_objects(session: nox.Session) -> None:
    """Remote object calls, chains and streams: asyncgw beside rpyc (classic) and Pyro5."""
    session.install("-e", ".[bench]", "rpyc", "Pyro5")
    session.run("python", "benchmarks/bench_objects.py", *session.posargs)


@nox.session(python="3.11")
def bench_executor(session: nox.Session) -> None:
    """A parallel map: asyncgw.Pool and asyncgw.sync.Executor beside
    ProcessPoolExecutor, multiprocessing.Pool, loky and dask.distributed."""
    session.install("-e", ".[bench]", "loky", "dask[distributed]")
    session.run("python", "benchmarks/bench_executor.py", *session.posargs)


@nox.session(python="3.11")
def bench_numpy(session: nox.Session) -> None:
    """1 MB numpy arrays in and out of a pool beside a raw pipe pour and
    ProcessPoolExecutor."""
    session.install("-e", ".[bench,numpy]")
    session.run("python", "benchmarks/bench_numpy.py", *session.posargs)


@nox.session(python="3.11")
def bench_slurm(session: nox.Session) -> None:
    """Gateway start through srun (slurm=) beside popen, and 8 gateways in one
    salloc allocation, on a throw-away single-node Slurm (needs root, slurm-wlm, munge)."""
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/bench_slurm.py", *session.posargs)
