"""XSpec: execnet's gateway specification strings, ``key=value//key//...``.

A spec is text plus parsed attributes. Parsing is as permissive as
execnet's (any key, any order); :meth:`XSpec.validate`, run by
``makegateway`` before anything starts, checks every key against the known
ones, so a typo fails there, naming the key, instead of being silently
ignored by the transport.
"""

from __future__ import annotations

from typing import Any

from ._errors import SpecError

__all__ = ["XSpec"]

#: Keys that choose the transport; a spec has exactly one.
TRANSPORT_KEYS = {"popen", "ssh", "socket", "via", "cmd", "docker", "kubectl", "sudo", "slurm"}
#: Keys that take no value (``popen``, not ``popen=x``).
FLAG_KEYS = {"popen", "dont_write_bytecode", "forward_logs", "socket_plaintext"}
#: Keys that may stand alone or take a value (``sudo`` or ``sudo=user``).
OPTIONAL_VALUE_KEYS = {"sudo", "socket", "slurm"}
#: Options understood by every transport, or reserved for the transports
#: that read them.
OPTION_KEYS = {
    "python",
    "chdir",
    "nice",
    "id",
    "dont_write_bytecode",
    "execmodel",
    "ssh_config",
    "ssh_identity",
    "ssh_known_hosts",
    "ssh_jump",
    "ssh_keepalive",
    "socket_secret_file",
    "socket_fingerprint",
    "socket_known_servers",
    "socket_plaintext",
    "installvia",
    "connect_timeout",
    "max_frame",
    "forward_logs",
    "forward_imports",
    "slurm_queue_timeout",
}
EXECMODELS = ("thread", "main_thread_only")
#: The smallest ``max_frame`` accepted: room for any control frame and a traceback.
MIN_MAX_FRAME = 4096


class XSpec:
    """A parsed gateway specification.

    ``XSpec("popen//python=python3.12//env:FOO=1").python == "python3.12"``.
    Keys not given read as ``None``; flags given read as ``True``; ``env:NAME``
    keys are collected in :attr:`env`. ``str(spec)`` is the text it was made
    from; equality and hash go by that text.

    As in execnet, any key parses (``XSpec("hello=3").hello == "3"``) and
    the keys may come in any order (``execmodel=main_thread_only//popen``).
    What a gateway cannot be made from — no transport or two, an unknown
    key, an unknown execmodel — is refused by :meth:`validate`, which
    ``makegateway`` calls before it starts anything.

    :raises SpecError: for a duplicate or malformed key, naming it.
    """

    popen: bool | None = None
    ssh: str | None = None
    socket: str | bool | None = None
    via: str | None = None
    cmd: str | None = None
    docker: str | None = None
    kubectl: str | None = None
    sudo: str | bool | None = None
    #: srun's options (``slurm`` alone: none); see :mod:`asyncgw.transports.slurm`.
    slurm: str | bool | None = None
    #: Seconds a ``slurm=`` gateway may wait in Slurm's queue.
    slurm_queue_timeout: str | None = None
    python: str | None = None
    chdir: str | None = None
    nice: str | None = None
    id: str | None = None
    dont_write_bytecode: bool | None = None
    execmodel: str | None = None
    ssh_config: str | None = None
    ssh_identity: str | None = None
    ssh_known_hosts: str | None = None
    ssh_jump: str | None = None
    ssh_keepalive: str | None = None
    socket_secret_file: str | None = None
    #: The socket server's certificate fingerprint, ``SHA256:...``.
    socket_fingerprint: str | None = None
    #: A file of ``host:port SHA256:...`` lines (default ~/.asyncgw/known_servers).
    socket_known_servers: str | None = None
    #: No TLS: for a ``--plaintext`` server on loopback.
    socket_plaintext: bool | None = None
    installvia: str | None = None
    connect_timeout: str | None = None
    max_frame: str | None = None
    #: Remote logging, warnings, thread exceptions and output reach the
    #: local logger ``asyncgw.remote.<id>`` (see :mod:`asyncgw.objects`).
    forward_logs: bool | None = None
    #: Comma-separated top-level names remote imports may fetch from here.
    forward_imports: str | None = None

    def __init__(self, string: str) -> None:
        if not isinstance(string, str):
            raise SpecError(f"a spec is a string, not {type(string).__name__}")
        self._spec = string
        self.env: dict[str, str] = {}
        self._extra: list[str] = []  # keys no transport or option knows
        seen: set[str] = set()
        for part in string.split("//"):
            key, sep, value = part.partition("=")
            if not key:
                raise SpecError(f"empty key in spec {string!r} (a stray '//' or '=')")
            if key.startswith("_"):
                raise SpecError(f"key {key!r} in spec {string!r} starts with '_'")
            if key in seen:
                raise SpecError(f"duplicate key {key!r} in spec {string!r}")
            seen.add(key)
            if key.startswith("env:"):
                if not key[4:]:
                    raise SpecError(f"key 'env:' without a variable name in {string!r}")
                self.env[key[4:]] = value
                continue
            if key not in TRANSPORT_KEYS and key not in OPTION_KEYS:
                self._extra.append(key)
                setattr(self, key, value if sep else True)
            elif key in FLAG_KEYS:
                if sep:
                    raise SpecError(f"key {key!r} takes no value, in spec {string!r}")
                setattr(self, key, True)
            elif key in OPTIONAL_VALUE_KEYS and not sep:
                setattr(self, key, True)
            else:
                if not sep or not value:
                    raise SpecError(f"key {key!r} needs a value (={key}...) in spec {string!r}")
                setattr(self, key, value)
        self._check_values()

    def __getattr__(self, name: str) -> Any:
        # Only reached for names never set: absent keys read as None.
        if name.startswith("_"):
            raise AttributeError(name)
        return None

    def _check_values(self) -> None:
        if self.nice is not None:
            try:
                int(self.nice)
            except ValueError:
                raise SpecError(f"key 'nice' wants an integer, not {self.nice!r}") from None
        if self.max_frame is not None and not (
            self.max_frame.isdigit() and int(self.max_frame) >= MIN_MAX_FRAME
        ):
            raise SpecError(
                f"key 'max_frame' wants a size in bytes of at least {MIN_MAX_FRAME},"
                f" not {self.max_frame!r}"
            )
        if self.connect_timeout is not None:
            try:
                float(self.connect_timeout)
            except ValueError:
                raise SpecError(
                    f"key 'connect_timeout' wants seconds, not {self.connect_timeout!r}"
                ) from None

    def validate(self) -> None:
        """Check that a gateway can be made from this spec.

        :raises SpecError: for no transport key or several, a key that no
            transport or option knows, or an execmodel other than
            ``thread`` and ``main_thread_only``; the message names the key.
        """
        string = self._spec
        unknown = [key for key in self._extra if not _is_plugin_transport(key)]
        if unknown:
            raise SpecError(
                f"unknown key {unknown[0]!r} in spec {string!r} (known: "
                f"{sorted(TRANSPORT_KEYS | OPTION_KEYS)} and env:NAME)"
            )
        transports = self._chosen_transports()
        if len(transports) > 1:
            raise SpecError(f"keys {sorted(transports)} each choose a transport; give one")
        if not transports:
            raise SpecError(
                f"spec {string!r} has no transport key (one of {sorted(TRANSPORT_KEYS)})"
            )
        if self.execmodel is not None and self.execmodel not in EXECMODELS:
            raise SpecError(f"key 'execmodel' is one of {EXECMODELS}, not {self.execmodel!r}")

    def _chosen_transports(self) -> list[str]:
        keys = sorted(TRANSPORT_KEYS) + [key for key in self._extra if _is_plugin_transport(key)]
        chosen = [key for key in keys if self.__dict__.get(key) is not None]
        # execnet's `popen//via=gw0`: a popen started by the gateway gw0.
        if "via" in chosen and "popen" in chosen:
            chosen.remove("popen")
        return chosen

    @property
    def transport(self) -> str:
        """The transport key of this spec (``'popen'``, ``'ssh'``, ``'via'``, ...).

        :raises SpecError: if the spec has no transport key, or several.
        """
        transports = self._chosen_transports()
        if len(transports) != 1:
            self.validate()
        return transports[0]

    def _samefilesystem(self) -> bool:
        """execnet's test: a popen worker without chdir shares our files."""
        return self.popen is not None and self.chdir is None and self.via is None

    def __repr__(self) -> str:
        return f"<XSpec {self._spec!r}>"

    def __str__(self) -> str:
        return self._spec

    def __hash__(self) -> int:
        return hash(self._spec)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, XSpec):
            return self._spec == other._spec
        return NotImplemented


def _is_plugin_transport(key: str) -> bool:
    """Whether an installed plug-in provides a transport named ``key``."""
    from ._plugins import plugin_transports  # read on first need only

    return key in plugin_transports()
