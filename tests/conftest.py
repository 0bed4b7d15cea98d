"""Shared fixtures: the transport-parametrized ``gateway``, the Python
matrix of the far side, the checks for root-only tests, and the check that no
test leaves a child process behind.

The matrix cannot vanish: interpreters are *found* (``python3.X`` under a
pyenv root or on ``PATH``, each probed for its version), and a test that
needs one that is missing is skipped with a reason line here and fails
where ``ASYNCGW_REQUIRE_MATRIX`` is set (CI). Root-only tests likewise skip
with a reason, and fail where ``ASYNCGW_REQUIRE_ROOT`` (or
``ASYNCGW_REQUIRE_SSHD``) is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import glob
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

import asyncgw

from .socketserver import socket_server
from .sshserver import Keys, ssh_server

#: The worker's interpreters of the far-side matrix (ours, 3.11, is the default).
WORKER_PYTHONS = ("3.9", "3.10", "3.12", "3.13")
#: The worker's interpreters a plain run adds to the local transports: the oldest
#: supported one, so that every run covers it.
DEFAULT_WORKER_PYTHONS = ("3.9",)
#: Older than supported: only a smoke test runs on it (tests/test_worker_pythons.py).
SMOKE_PYTHON = "3.8"
#: The probe run in a candidate interpreter: its version, then its real path
#: (a pyenv shim is a script; the gateway should start the interpreter itself).
_PROBE = "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.executable)"


def _version_key(path: str) -> tuple[int, ...]:
    """Sort key of ``<root>/versions/3.9.18/bin/...``: newest patch release last."""
    release = Path(path).parent.parent.name
    return tuple(int(part) if part.isdigit() else -1 for part in release.split("."))


def python_candidates(version: str, environ: dict[str, str] | None = None) -> list[str]:
    """Where ``python{version}`` may be: each pyenv root's versions (newest
    patch first), then each ``PATH`` entry, in that order."""
    environ = dict(os.environ) if environ is None else environ
    roots = [environ.get("PYENV_ROOT", ""), os.path.join(environ.get("HOME", "/root"), ".pyenv")]
    found: list[str] = []
    for root in dict.fromkeys(r for r in roots if r):
        pattern = os.path.join(
            glob.escape(root), "versions", f"{version}.*", "bin", f"python{version}"
        )
        found += sorted(glob.glob(pattern), key=_version_key, reverse=True)
    for directory in environ.get("PATH", "").split(os.pathsep):
        if directory:
            found.append(os.path.join(directory, f"python{version}"))
    return list(dict.fromkeys(found))


def find_python(version: str, environ: dict[str, str] | None = None) -> str | None:
    """The real path of a working ``python{version}`` (``"3.9"``), or None.

    A candidate counts only if it runs and reports that version: a shim of
    an interpreter that is not installed, or a misnamed one, is passed over.
    """
    for candidate in python_candidates(version, environ):
        if not os.access(candidate, os.X_OK) or os.path.isdir(candidate):
            continue
        try:
            probe = subprocess.run(
                [candidate, "-I", "-c", _PROBE],
                capture_output=True,
                text=True,
                timeout=30,
                env=environ,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        lines = probe.stdout.split()
        if probe.returncode == 0 and len(lines) == 2 and lines[0] == version:
            return lines[1]
    return None


@functools.cache
def found_python(version: str) -> str | None:
    """:func:`find_python` in this process's environment, once per version."""
    return find_python(version)


def matrix_required() -> bool:
    """Whether a missing matrix interpreter fails the run (CI) instead of skipping."""
    return bool(os.environ.get("ASYNCGW_REQUIRE_MATRIX"))


def require_python(version: str) -> str:
    """The path of ``python{version}``; skip the test (with the reason) if
    none is found, or fail it where ``ASYNCGW_REQUIRE_MATRIX`` is set."""
    path = found_python(version)
    if path is None:
        reason = f"no Python {version} found (pyenv roots or python{version} on PATH)"
        if matrix_required() and version != SMOKE_PYTHON:
            pytest.fail(f"{reason}, and ASYNCGW_REQUIRE_MATRIX is set")
        pytest.skip(reason)
    return path


#: The path of Python 3.9 when found, for tests written for it ("" when not:
#: those tests carry ``@pytest.mark.python("3.9")`` and skip or fail first).
PYTHON39 = found_python("3.9") or ""


def root_required() -> bool:
    """Whether a root-only test fails (CI) instead of skipping."""
    return bool(os.environ.get("ASYNCGW_REQUIRE_ROOT") or os.environ.get("ASYNCGW_REQUIRE_SSHD"))


@functools.cache
def _netns_problem() -> str | None:
    """Why network namespaces cannot be made here, or None if they can
    (checked once, by making and deleting one)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2 (ip)"
    name = f"asyncgw-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()[:200]}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)
    return None


def require_root_netns() -> None:
    """Skip unless root and able to make network namespaces; fail instead
    where ``ASYNCGW_REQUIRE_ROOT`` or ``ASYNCGW_REQUIRE_SSHD`` is set (CI)."""
    problem = _netns_problem()
    if problem is not None:
        if root_required():
            pytest.fail(f"{problem}, and this run requires root-only tests")
        pytest.skip(problem)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--worker-python",
        default=os.environ.get("ASYNCGW_WORKER_PYTHON", ""),
        help="comma-separated Python versions (3.12) of the far side: run only the "
        "transport-independent tests, over popen and via gateways whose worker is "
        "that interpreter (env: ASYNCGW_WORKER_PYTHON)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "python(version): needs that interpreter (skips, or fails in CI, without it)"
    )
    config.addinivalue_line(
        "markers", "transport_independent: runs over every transport (set by conftest)"
    )


def worker_pythons(config: pytest.Config) -> tuple[str, ...]:
    """The far-side matrix of this run: ``--worker-python``, if given."""
    value: str = config.getoption("--worker-python")
    return tuple(v.strip() for v in value.split(",") if v.strip())


#: Specs of each transport the transport-independent tests run over: the
#: last one is the gateway under test, the ones before it what it needs
#: (the proxies of a via gateway).
TRANSPORT_SPECS: dict[str, list[str]] = {
    "popen": ["popen"],
    "cmd": [f"cmd=env ASYNCGW_TEST_TRANSPORT=cmd {sys.executable}"],
    "via": ["popen//id=proxy", "via=proxy"],
    "via-via": ["popen//id=proxy", "via=proxy//id=inner", "via=inner"],
    # {ssh}: the address and options of an in-process asyncssh server
    "ssh": [f"{{ssh}}//python={sys.executable}"],
    "ssh-via": [f"{{ssh}}//id=head//python={sys.executable}", "via=head"],
    # {socket}: the address, secret and pinned fingerprint of a fresh
    # asyncgw socket server (TLS; test_socket.py also covers plaintext)
    "socket": ["{socket}"],
    "socket-installvia": ["popen//id=host", "socket//installvia=host"],
}


def worker_transport_ids(versions: tuple[str, ...]) -> list[str]:
    """Transport ids whose worker runs on another interpreter: ``popen-py3.9``
    (the gateway itself) and ``via-py3.9`` (behind a proxy on ours)."""
    return [f"{kind}-py{version}" for version in versions for kind in ("popen", "via")]


def specs_for(transport: str) -> list[str]:
    """The specs of a transport id (one of a worker interpreter's: the
    interpreter is looked up now, and its absence skips or fails)."""
    if transport in TRANSPORT_SPECS:
        return TRANSPORT_SPECS[transport]
    kind, _, version = transport.partition("-py")
    python = require_python(version)
    if kind == "popen":
        return [f"popen//python={python}"]
    return ["popen//id=proxy", f"via=proxy//python={python}"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "transport_specs" not in metafunc.fixturenames:
        return
    versions = worker_pythons(metafunc.config)
    if versions:
        ids = worker_transport_ids(versions)
    else:
        ids = sorted(TRANSPORT_SPECS) + worker_transport_ids(DEFAULT_WORKER_PYTHONS)
    metafunc.parametrize("transport_specs", ids, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the transport-independent tests; under ``--worker-python`` keep only them."""
    kept, dropped = [], []
    for item in items:
        if "transport_specs" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.transport_independent)
            kept.append(item)
        else:
            dropped.append(item)
    if worker_pythons(config) and dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("python"):
        require_python(*marker.args)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def transport_specs(request: pytest.FixtureRequest) -> list[str]:
    """Parametrized by :func:`pytest_generate_tests` with transport ids."""
    return specs_for(request.param)


@pytest.fixture
async def group() -> AsyncIterator[asyncgw.Group]:
    async with asyncgw.Group(exit_timeout=2.0) as group:
        yield group


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys.generate(tmp_path_factory.mktemp("ssh-keys"))


def ssh_address(keys: Keys, port: int) -> str:
    """``ssh=...`` for an in-process server on ``port``, host key verified."""
    return (
        f"ssh=127.0.0.1:{port}//ssh_identity={keys.user_key_path}"
        f"//ssh_known_hosts={keys.known_hosts(port)}"
    )


@pytest.fixture
async def gateway(
    group: asyncgw.Group, transport_specs: list[str], ssh_keys: Keys, tmp_path: Path
) -> AsyncIterator[asyncgw.Gateway]:
    async with contextlib.AsyncExitStack() as stack:
        if any("{ssh}" in spec for spec in transport_specs):
            port, _ = await stack.enter_async_context(ssh_server(ssh_keys))
            transport_specs = [
                spec.replace("{ssh}", ssh_address(ssh_keys, port)) for spec in transport_specs
            ]
        if any("{socket}" in spec for spec in transport_specs):
            server = stack.enter_context(socket_server(tmp_path))
            transport_specs = [spec.replace("{socket}", server.spec()) for spec in transport_specs]
        for spec in transport_specs[:-1]:
            await group.makegateway(spec)
        yield await group.makegateway(transport_specs[-1])
        await group.terminate(timeout=2.0)  # while the server is still up


async def wait_gone(pids: list[int | None], timeout: float = 10.0) -> None:
    """Wait until none of ``pids`` runs (zombies count as gone); fail after
    ``timeout`` seconds. The processes need not be our children."""
    processes = []
    for pid in pids:
        assert pid is not None
        with contextlib.suppress(psutil.NoSuchProcess):
            processes.append(psutil.Process(pid))
    _, alive = await asyncio.to_thread(psutil.wait_procs, processes, timeout)
    alive = [proc for proc in alive if proc.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"still running: {[proc.pid for proc in alive]}"


@pytest.fixture(autouse=True)
def no_child_left() -> Iterator[None]:
    """Fail the test if a process it started outlives it (after a grace
    period for exiting processes to be reaped), and kill the survivors."""
    me = psutil.Process()
    before = {child.pid for child in me.children(recursive=True)}
    yield
    survivors = [child for child in me.children(recursive=True) if child.pid not in before]
    _, alive = psutil.wait_procs(survivors, timeout=5)
    alive = [proc for proc in alive if proc.status() != psutil.STATUS_ZOMBIE]
    for proc in alive:
        proc.kill()
    assert not alive, f"child processes left behind: {[_describe(proc) for proc in alive]}"


def _describe(proc: psutil.Process) -> object:
    try:
        return proc.cmdline()[:2]
    except psutil.Error:  # it has just gone
        return proc.pid
