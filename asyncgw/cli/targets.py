"""From the command line's ``HOSTS`` to places to run: SSH hosts or here.

``HOSTS`` is a node-set pattern (:func:`asyncgw.fleet.expand`). The bare
names ``localhost`` and ``local`` mean this machine, without SSH (one
place, however often named); any other name, and ``localhost`` with a
user or a port (``root@localhost``, ``localhost:2222``), is reached over
SSH. Each place keeps the name it was given as its label in the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..fleet import Host, expand

__all__ = ["LOCAL_NAMES", "Options", "Target", "connection_params", "gateway_spec", "parse_hosts"]

#: Names that mean this machine.
LOCAL_NAMES = frozenset({"localhost", "local"})


@dataclass(frozen=True)
class Target:
    """One place to run: ``host`` is ``None`` for this machine."""

    label: str
    host: Host | None

    @property
    def address(self) -> str:
        """What ``{{{host}}}`` becomes for this place."""
        return "localhost" if self.host is None else self.host.address


@dataclass(frozen=True)
class Options:
    """The connection options of the command line."""

    user: str | None = None
    identity: str | None = None
    port: int | None = None
    #: A known_hosts file, ``"none"`` (no checking), or ``None`` (the default file).
    known_hosts: str | None = None
    jump: str | None = None
    connect_timeout: float | None = None


def parse_hosts(pattern: str) -> list[Target]:
    """The places ``pattern`` names, in order, each once.

    :raises ValueError: naming the pattern, for a bad node set or a name
        that is not ``[user@]host[:port]``.
    """
    names = expand(pattern)
    if not names:
        raise ValueError(f"no hosts in {pattern!r}")
    targets: list[Target] = []
    seen: set[Host | None] = set()
    for name in names:
        if name in LOCAL_NAMES:
            host: Host | None = None
            label = "localhost"
        else:
            host = Host.parse(name)
            label = name
        if host not in seen:
            seen.add(host)
            targets.append(Target(label, host))
    return targets


def connection_params(options: Options) -> dict[str, Any]:
    """``connection_params`` for the fleet's actions."""
    params: dict[str, Any] = {}
    if options.user is not None:
        params["user"] = options.user
    if options.identity is not None:
        params["keyfile"] = options.identity
    if options.port is not None:
        params["port"] = options.port
    if options.known_hosts is not None:
        params["known_hosts"] = None if options.known_hosts == "none" else options.known_hosts
    if options.jump is not None:
        params["jump"] = options.jump
    if options.connect_timeout is not None:
        params["connect_timeout"] = options.connect_timeout
    return params


def gateway_spec(target: Target, options: Options, gateway_id: str, python: str | None) -> str:
    """The spec of a gateway on ``target``: ``popen`` here, else ``ssh=``
    with the same options as the fleet's SSH connections."""
    keys = [f"id={gateway_id}"]
    if python is not None:
        keys.append(f"python={python}")
    if target.host is None:
        return "//".join(["popen", *keys])
    host = target.host
    user = host.user or options.user
    port = host.port or options.port
    address = f"[{host.address}]" if ":" in host.address else host.address
    ssh = f"ssh={user + '@' if user else ''}{address}{f':{port}' if port else ''}"
    if options.identity is not None:
        keys.append(f"ssh_identity={options.identity}")
    if options.known_hosts is not None:
        keys.append(f"ssh_known_hosts={options.known_hosts}")
    if options.jump is not None:
        keys.append(f"ssh_jump={options.jump}")
    if options.connect_timeout is not None:
        keys.append(f"connect_timeout={options.connect_timeout:g}")
    return "//".join([ssh, *keys])
