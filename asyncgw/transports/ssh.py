"""ssh: a worker on another host, over asyncssh (not the ``ssh`` binary).

``ssh=[user@]host[:port]`` runs ``python3 -c LOADER`` (or ``python=``) in an
exec session. Options, all spec keys:

====================================  =========================================
``ssh_config=PATH``                   an OpenSSH client config to read
                                      (default: ``~/.ssh/config`` if present)
``ssh_identity=PATH``                 a private key to offer
``ssh_known_hosts=PATH``              where host keys are checked (default:
                                      ``~/.ssh/known_hosts``); ``none`` turns
                                      checking off, visibly, in the spec
``ssh_jump=[user@]host[:port]``       connect through this host first
``ssh_keepalive=SECONDS``             keepalive interval (default 10); a host
                                      that stops answering is lost after 3
``connect_timeout=SECONDS``           for the connection and the greeting
====================================  =========================================

Gateways to the same host, user and options share one SSH connection, up
to ``sshpool.limits.max_sessions`` (10) gateways per connection (OpenSSH's
``MaxSessions`` default); past it another connection opens
(:mod:`.sshpool`, which fleet commands share). A connection closes when
its last gateway ends. The first gateway of a connection runs in an exec
session of its own; the later ones with the same ``python=`` are forked by
a fork server on the host, over streamlocal channels of the connection
(:mod:`.sshfork`), or started in exec sessions of their own where that
cannot be. Nothing relies on signals over SSH (sshd refuses them in common
setups): killing closes the session, and the worker exits when its input
ends (a forked worker's process group is killed by its fork server too).
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from .._bootstrap import python_argv
from ._base import OpenContext, StreamSink
from .sshfork import fork_worker
from .sshpool import OPTION_KEYS, SSHTarget, acquire, parse_address
from .sshstream import SSHTransport, StreamSession

if TYPE_CHECKING:
    from .._spec import XSpec

__all__ = ["SSHTransport", "open_ssh"]

DEFAULT_CONNECT_TIMEOUT = 30.0


def _target(spec: XSpec) -> SSHTarget:
    assert spec.ssh is not None
    host, port, user = parse_address(spec.ssh, "ssh")
    options = tuple(
        (key, getattr(spec, key)) for key in OPTION_KEYS if getattr(spec, key) is not None
    )
    return SSHTarget(host, port, user, options)


async def open_ssh(
    spec: XSpec, sink: StreamSink, bootstrap: bytes, context: OpenContext
) -> SSHTransport:
    """Open (or share) a connection to the spec's host and start a worker.

    :raises HostNotFound: if the host cannot be reached.
    :raises AuthenticationError: if it refused our credentials.
    :raises HostKeyError: if its host key could not be verified.
    """
    target = _target(spec)
    timeout = float(spec.connect_timeout or DEFAULT_CONNECT_TIMEOUT)
    slot = await acquire(target, timeout)
    python = shlex.split(spec.python) if spec.python else ["python3"]
    command = shlex.join(python_argv(python))
    session = StreamSession(sink)
    try:
        if context.config is not None:
            forked = await fork_worker(slot, python, context.config, sink, timeout)
            if forked is not None:
                return forked
        channel, _ = await slot.conn.create_session(lambda: session, command, encoding=None)
    except BaseException:
        slot.release()
        raise
    transport = SSHTransport(target, slot, channel, session)
    transport.write(bootstrap)
    return transport
