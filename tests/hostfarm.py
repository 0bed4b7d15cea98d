"""Many hosts on one machine, for tests and benchmarks that need a fleet.

``host_farm(keys, count, directory)`` makes ``count`` network namespaces,
each joined to this one by a veth pair and running its own OpenSSH sshd on
port 22, and yields their addresses. Invariants it keeps:

- Names and subnets are the farm's own: namespace and link names carry this
  process's pid and a per-process farm counter, and each farm takes a
  ``10.X.0.0/16`` block (more than one for over 250 hosts) that no route
  here overlaps, chosen under a machine-wide lock so that concurrent runs
  do not pick the same one.
- Host ``i`` (from 0) is ``10.(X + i // 250).(i % 250 + 1).2``; this side
  of its link is ``.1`` of the same ``/24``.
- Every sshd is started before any is waited for, and they are waited for
  together, so a farm of 100 starts in about the time of one.
- At exit, even when the body raises: every process in the namespaces
  (sshd and its per-connection children) is ended, the namespaces are
  deleted (taking their veth pairs along), and none with the farm's prefix
  is left.

The namespaces share this machine's filesystem, hostname and users: only
the network differs.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import os
import re
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .conftest import require_root_netns
from .realsshd import require_sshd, spawn_sshd, stop_sshd, write_sshd_config
from .sshserver import Keys

#: Hosts per ``10.X.0.0/16`` block: third octets 1..250.
HOSTS_PER_BLOCK = 250
#: Seconds all sshds together may take to listen.
START_TIMEOUT = 60.0
#: Held while a farm picks its subnets and sets its links up.
LOCK_FILE = Path("/run/lock/asyncgw-hostfarm.lock")

_farms = itertools.count()


class HostFarm(list[str]):
    """The addresses of a farm's hosts (a list), and their names here.

    :ivar prefix: what every namespace and link name of the farm starts
        with, followed by ``n`` (namespace), ``o`` (link here) or ``i``
        (link there), then the host's index in hex.
    :ivar namespaces: the network namespace of each host, in order.
    :ivar links: this side's veth of each host, in order (``ip link set
        LINK down`` cuts the host off).
    """

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.namespaces: list[str] = []
        self.links: list[str] = []


def require_farm() -> None:
    """Skip without root, iproute2, working network namespaces or sshd; fail
    instead where ASYNCGW_REQUIRE_SSHD or ASYNCGW_REQUIRE_ROOT is set (CI)."""
    require_sshd()
    require_root_netns()  # also checks that `ip netns add` works here


def known_hosts_for(keys: Keys, addresses: Iterable[str], path: Path) -> Path:
    """Write a known_hosts file at ``path``: every address (port 22) with the
    farm's host key. Returns ``path``."""
    public = keys.host_key.export_public_key().decode().strip()
    path.write_text("".join(f"{address} {public}\n" for address in addresses))
    return path


def _ip_batch(commands: list[str], netns: str | None = None) -> str:
    """Run ``ip`` commands in one process (``ip -batch``); their output."""
    where = ["-n", netns] if netns else []
    completed = subprocess.run(
        ["ip", *where, "-batch", "-"],
        input="".join(f"{command}\n" for command in commands),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"ip -batch failed: {completed.stderr.strip()}")
    return completed.stdout


def _free_blocks(count: int) -> int:
    """The first ``X`` such that ``10.X.0.0/16`` .. ``10.(X+count-1).0.0/16``
    overlap no route or address here; starts from a pid-derived value so
    that runs usually pick different blocks even without the lock."""
    listing = subprocess.run(
        ["ip", "-4", "-o", "route", "show", "table", "all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listing += subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    used = [
        ipaddress.ip_network(match, strict=False)
        for match in re.findall(r"\b(\d+\.\d+\.\d+\.\d+(?:/\d+)?)", listing)
    ]
    used = [network for network in used if network.prefixlen > 0]  # not "default"
    span = 254 - 16 - count  # second octets 16..254
    if span < 0:
        raise ValueError(f"{count} blocks of 250 hosts do not fit in 10.0.0.0/8")
    start = os.getpid() % (span + 1)
    for offset in range(span + 1):
        first = 16 + (start + offset) % (span + 1)
        blocks = [ipaddress.ip_network(f"10.{first + k}.0.0/16") for k in range(count)]
        if not any(block.overlaps(network) for block in blocks for network in used):
            return first
    raise RuntimeError("no free 10.X.0.0/16 block for a host farm")


def _wait_listening(
    servers: list[subprocess.Popen[bytes]], addresses: list[str], logs: list[Path]
) -> None:
    """Wait until every sshd accepts connections on port 22, trying all the
    pending ones at once each time round.

    :raises RuntimeError: if one exits or they are not all up in time.
    """
    deadline = time.monotonic() + START_TIMEOUT
    pending = set(range(len(addresses)))
    while pending:
        for index in pending:
            if servers[index].poll() is not None:
                raise RuntimeError(f"sshd on {addresses[index]} exited:\n{logs[index].read_text()}")
        with selectors.DefaultSelector() as selector:
            for index in pending:
                probe = socket.socket()
                probe.setblocking(False)
                probe.connect_ex((addresses[index], 22))
                selector.register(probe, selectors.EVENT_WRITE, index)
            waiting = len(pending)
            round_ends = time.monotonic() + 1.0
            while waiting and (left := round_ends - time.monotonic()) > 0:
                for key, _ in selector.select(left):
                    probe = key.fileobj  # type: ignore[assignment]
                    if probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                        pending.discard(key.data)
                    selector.unregister(probe)
                    probe.close()
                    waiting -= 1
            for key in list(selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
        if pending:
            if time.monotonic() > deadline:
                late = sorted(addresses[index] for index in pending)
                raise RuntimeError(f"sshd did not start in time on {late}")
            time.sleep(0.05)


def _link_names() -> set[str]:
    """The names of this namespace's links."""
    listing = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return set(re.findall(r"^\d+: ([^:@]+)", listing, re.MULTILINE))


def _end_processes_in(namespaces: list[str]) -> None:
    """Kill whatever still runs in ``namespaces`` (sessions of an sshd that
    was terminated outlive it)."""
    if not namespaces:
        return
    pids = _ip_batch([f"netns pids {name}" for name in namespaces]).split()
    for pid in map(int, pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def host_farm(
    keys: Keys, count: int, directory: Path, *, sshd_options: str = ""
) -> Iterator[HostFarm]:
    """``count`` hosts, each a network namespace running sshd on port 22
    (root may log in with ``keys.user_key_path``; host key
    ``keys.host_key``). Yields their addresses, a :class:`HostFarm`.

    :param directory: where each host's sshd_config, pid file and log go
        (a subdirectory per host).
    :param sshd_options: more sshd_config text for every sshd, e.g.
        ``"MaxStartups 10:30:100\\n"``.
    :raises RuntimeError: if the network cannot be set up or an sshd does
        not start (what was made is removed first).
    """
    if count < 1:
        raise ValueError("a farm needs at least one host")
    farm = next(_farms)
    # Names are at most 15 characters (link names): 1 + pid (<= 6 hex) +
    # "x" + farm + kind letter + index; a kind letter (n, o, i) ends the prefix.
    prefix = f"f{os.getpid():x}x{farm:x}"
    if len(f"{prefix}o{count:x}") > 15:
        raise ValueError(f"{count} hosts' link names would be too long")
    hosts = HostFarm(prefix)
    servers: list[subprocess.Popen[bytes]] = []
    namespaces: list[str] = []
    try:
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        with LOCK_FILE.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            first = _free_blocks(-(-count // HOSTS_PER_BLOCK))
            outside: list[str] = []
            for index in range(count):
                netns, out, inside = (
                    f"{prefix}n{index:x}",
                    f"{prefix}o{index:x}",
                    f"{prefix}i{index:x}",
                )
                subnet = f"10.{first + index // HOSTS_PER_BLOCK}.{index % HOSTS_PER_BLOCK + 1}"
                namespaces.append(netns)
                outside += [
                    f"netns add {netns}",
                    f"link add {out} type veth peer name {inside} netns {netns}",
                    f"addr add {subnet}.1/24 dev {out}",
                    f"link set {out} up",
                ]
                hosts.namespaces.append(netns)
                hosts.links.append(out)
                hosts.append(f"{subnet}.2")
            try:
                _ip_batch(outside)
            finally:
                # What exists is ours to delete, however far the batch got.
                present = set(
                    subprocess.run(
                        ["ip", "netns", "list"], capture_output=True, text=True
                    ).stdout.split()
                )
                namespaces[:] = [name for name in namespaces if name in present]
            for index, netns in enumerate(hosts.namespaces):
                _ip_batch(
                    [
                        f"addr add {hosts[index]}/24 dev {prefix}i{index:x}",
                        f"link set {prefix}i{index:x} up",
                        "link set lo up",
                    ],
                    netns,
                )
        logs = []
        for index, netns in enumerate(hosts.namespaces):
            host_directory = directory / f"sshd-{hosts[index]}"
            host_directory.mkdir(parents=True, exist_ok=True)
            config = write_sshd_config(keys, host_directory, hosts[index], 22, sshd_options)
            logs.append(host_directory / "sshd.log")
            servers.append(spawn_sshd(config, logs[-1], netns))
        _wait_listening(servers, hosts, logs)
        yield hosts
    finally:
        for server in servers:
            if server.poll() is None:
                server.terminate()
        for server in servers:
            stop_sshd(server)
        _end_processes_in(namespaces)
        if namespaces:
            # Deleting a namespace leaves its veth pair to the kernel's
            # asynchronous cleanup (seconds for a hundred); deleting the
            # links first removes them, and their routes, now.
            present = _link_names()
            _ip_batch(
                [f"link del {link}" for link in hosts.links if link in present]
                + [f"netns del {name}" for name in namespaces]
            )
        leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        left = [line for line in leftover.splitlines() if line.startswith(f"{prefix}n")]
        left += sorted(link for link in _link_names() if link.startswith(f"{prefix}o"))
        assert not left, f"namespaces or links left behind: {left}"
