"""cmd: a worker behind any command that yields a Python on stdin/stdout.

``cmd=ARGV`` runs ``ARGV -c LOADER`` (ARGV split like a shell would, but no
shell runs: nothing is interpreted twice). Convenience keys build ARGV for
the usual cases; ``python=`` names the interpreter inside (a command line):

=========================  ==============================================
``cmd=nice -n 5 python3``  ``nice -n 5 python3 -c LOADER``
``docker=CONTAINER``       ``docker exec -i CONTAINER python3 -c LOADER``
``kubectl=POD``            ``kubectl exec -i POD -- python3 -c LOADER``
``sudo`` / ``sudo=USER``   ``sudo -n [-u USER] PYTHON -c LOADER``
=========================  ==============================================

The command runs as a local child like a popen worker, so termination and
killing work the same: what dies with the command's process group dies.
The worker itself exits when its input ends, which is what reaches a
container or pod when the local client goes.
"""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING

from .._bootstrap import python_argv
from .._errors import SpecError
from ._base import OpenContext, StreamSink
from .popen import PopenTransport, start_process

if TYPE_CHECKING:
    from .._spec import XSpec

__all__ = ["cmd_argv", "open_cmd"]


def cmd_argv(spec: XSpec) -> list[str]:
    """The command line ``spec`` asks for, ending in the worker's loader.

    :raises SpecError: for an empty command.
    """
    if spec.cmd is not None:
        command = shlex.split(spec.cmd)
        if not command:
            raise SpecError(f"key 'cmd' of spec {str(spec)!r} is an empty command")
        return python_argv(command)
    if spec.docker is not None:
        prefix = ["docker", "exec", "-i", spec.docker]
        python = shlex.split(spec.python or "python3")
    elif spec.kubectl is not None:
        prefix = ["kubectl", "exec", "-i", spec.kubectl, "--"]
        python = shlex.split(spec.python or "python3")
    else:
        user = spec.sudo if isinstance(spec.sudo, str) else None
        prefix = ["sudo", "-n", *(["-u", user] if user else [])]
        python = shlex.split(spec.python) if spec.python else [sys.executable]
    return python_argv([*prefix, *python])


async def open_cmd(
    spec: XSpec, sink: StreamSink, bootstrap: bytes, context: OpenContext
) -> PopenTransport:
    """Run the command of ``spec`` and send its Python the bootstrap.

    :raises HostNotFound: if the command cannot be executed.
    """
    return await start_process(cmd_argv(spec), spec, sink, bootstrap)
