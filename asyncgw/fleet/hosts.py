"""Hosts, host lists and connection parameters, as execo has them.

A :class:`Host` is an address with, optionally, the user, key file and
port to reach it with; equal hosts (all four equal) are one host.
Connection parameters come, for each of them, from the host first, then
from the action's ``connection_params``, then from
:data:`default_connection_params`; what none of them sets is left to
asyncssh, which reads ``~/.ssh/config`` (``ProxyJump``, ``Include``,
``Match``, ``IdentityFile``, ...).

``connection_params`` keys:

======================  ========================================================
``user``                login name
``keyfile``             a private key file to offer
``port``                sshd's port
``known_hosts``         a known_hosts file; ``None`` turns host key checking off
                        (default: ``~/.ssh/known_hosts``)
``config``              an OpenSSH client config file (default ``~/.ssh/config``)
``jump``                ``[user@]host[:port]`` to connect through (ProxyJump)
``keepalive``           seconds between keepalives (default 10)
``connect_timeout``     seconds for connecting and authenticating (default 30)
``kill_grace``          seconds between SIGTERM and SIGKILL when a command is
                        stopped (default 2)
``stop_on_disconnect``  a watcher stops each command when its connection
                        is gone (the caller died), at a fork per command
                        (default False: such commands run on, as with ``ssh``)
======================  ========================================================
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from ..transports.sshpool import OPTION_KEYS, SSHTarget, parse_address
from .nodeset import expand

__all__ = [
    "CONNECTION_KEYS",
    "Host",
    "HostsLike",
    "default_connection_params",
    "get_hosts_list",
    "resolve_params",
    "ssh_target",
]

#: The keys ``connection_params`` may hold.
CONNECTION_KEYS = frozenset(
    {
        "user",
        "keyfile",
        "port",
        "known_hosts",
        "config",
        "jump",
        "keepalive",
        "connect_timeout",
        "kill_grace",
        "stop_on_disconnect",
    }
)

#: The parameters used where neither the host nor the action sets one;
#: change it in place to change the defaults of the whole program.
default_connection_params: dict[str, Any] = {"connect_timeout": 30.0, "kill_grace": 2.0}


class Host:
    """A host to connect to: ``Host("node1", user="root", port=2222)``.

    ``address`` may also be a :class:`Host`, whose fields are copied
    (and overridden by the arguments that are given). Hosts are equal,
    and hash alike, when address, user, keyfile and port all are.
    """

    __slots__ = ("address", "keyfile", "port", "user")

    address: str
    user: str | None
    keyfile: str | None
    port: int | None

    def __init__(
        self,
        address: str | Host,
        user: str | None = None,
        keyfile: str | None = None,
        port: int | None = None,
    ) -> None:
        if isinstance(address, Host):
            user = address.user if user is None else user
            keyfile = address.keyfile if keyfile is None else keyfile
            port = address.port if port is None else port
            address = address.address
        if not isinstance(address, str) or not address:
            raise ValueError(f"a host needs an address, not {address!r}")
        self.address = address
        self.user = user
        self.keyfile = keyfile
        self.port = int(port) if port is not None else None
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError(f"host {address!r}: port {port!r} is not from 1 to 65535")

    @classmethod
    def parse(cls, text: str) -> Host:
        """``[user@]address[:port]`` as a Host.

        :raises ValueError: naming ``text`` if it is not one.
        """
        try:
            address, port, user = parse_address(text.strip(), "host")
        except Exception as exc:
            raise ValueError(f"not a host: {text!r} ({exc})") from None
        return cls(address, user=user, port=port)

    def _key(self) -> tuple[str, str | None, str | None, int | None]:
        return (self.address, self.user, self.keyfile, self.port)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Host) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}={value!r}"
            for name, value in (("user", self.user), ("keyfile", self.keyfile), ("port", self.port))
            if value is not None
        )
        return f"Host({self.address!r}{extra})"

    def __str__(self) -> str:
        return self.address


HostsLike = Host | str | Iterable[Host | str]


def get_hosts_list(hosts: HostsLike) -> list[Host]:
    """Hosts as a list of :class:`Host`, in order, each once.

    ``hosts`` is a Host, a node-set pattern (``"root@node[1-16,20]:22"``,
    ``"@hostfile"``; see :mod:`.nodeset`), or an iterable of these.

    :raises ValueError: for a pattern that is not one.
    """
    items: Iterable[Host | str] = [hosts] if isinstance(hosts, Host | str) else hosts
    result: dict[Host, None] = {}
    for item in items:
        if isinstance(item, Host):
            result[item] = None
        elif isinstance(item, str):
            result.update((Host.parse(name), None) for name in expand(item))
        else:
            raise TypeError(f"not a host: {item!r}")
    return list(result)


def resolve_params(host: Host, connection_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The connection parameters in force for ``host``: its own fields,
    then ``connection_params``, then :data:`default_connection_params`.

    :raises ValueError: naming the keys that are not connection parameters.
    """
    given = dict(connection_params or {})
    unknown = sorted(set(given) - CONNECTION_KEYS)
    if unknown:
        raise ValueError(f"unknown connection_params {unknown}; known: {sorted(CONNECTION_KEYS)}")
    params = {**default_connection_params, **given}
    for key in ("user", "keyfile", "port"):
        if getattr(host, key) is not None:
            params[key] = getattr(host, key)
    return params


def ssh_target(host: Host, params: Mapping[str, Any]) -> SSHTarget:
    """Where the SSH pool connects for ``host`` with ``params``; written
    with the ssh gateway's option names and values, so that a gateway
    ``ssh=user@host//ssh_identity=KEY`` shares the connection."""
    options: dict[str, str | None] = {}
    if params.get("config") is not None:
        options["ssh_config"] = str(params["config"])
    if params.get("keyfile") is not None:
        options["ssh_identity"] = os.fspath(params["keyfile"])
    if "known_hosts" in params:
        known = params["known_hosts"]
        options["ssh_known_hosts"] = "none" if known is None else os.fspath(known)
    if params.get("jump") is not None:
        options["ssh_jump"] = str(params["jump"])
    if params.get("keepalive") is not None:
        options["ssh_keepalive"] = str(params["keepalive"])
    port = params.get("port")
    return SSHTarget(
        host.address,
        int(port) if port is not None else None,
        params.get("user"),
        tuple((key, options[key]) for key in OPTION_KEYS if key in options),
    )
