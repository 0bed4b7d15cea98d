"""Execution models: execnet's ``channel.gateway.execmodel`` object.

Remote code (pytest-xdist's worker side, for one) takes its threading
primitives from here; only the ``thread`` and ``main_thread_only`` backends
exist, both on OS threads. Shared by both sides: the blocking facade
reports the same objects locally. Stdlib only, shipped as source.
"""

from __future__ import annotations

import os
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

__all__ = ["EXECMODELS", "MAIN_THREAD_ONLY_DEADLOCK_TEXT", "ExecModel", "get_execmodel"]

#: execnet's words for a remote_exec refused under ``main_thread_only``.
MAIN_THREAD_ONLY_DEADLOCK_TEXT = (
    "concurrent remote_exec would cause deadlock for main_thread_only execmodel"
)


class ExecModel:
    """execnet's execution model object (``channel.gateway.execmodel``):
    the threading primitives remote code should use. Only the ``thread``
    and ``main_thread_only`` backends exist here; both are OS threads."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def __repr__(self) -> str:
        return "<ExecModel %r>" % self.backend

    @property
    def queue(self) -> Any:
        import queue

        return queue

    @property
    def subprocess(self) -> Any:
        import subprocess

        return subprocess

    @property
    def socket(self) -> Any:
        import socket

        return socket

    def start(self, func: Callable[..., object], args: tuple[Any, ...] = ()) -> None:
        threading.Thread(target=func, args=args, daemon=True).start()

    def get_ident(self) -> int:
        return threading.get_ident()

    def sleep(self, delay: float) -> None:
        import time

        time.sleep(delay)

    def fdopen(self, fd: int, mode: str, bufsize: int = 1, closefd: bool = True) -> Any:
        return os.fdopen(fd, mode, bufsize, encoding="utf-8", closefd=closefd)

    def Lock(self) -> Any:  # noqa: N802 - execnet's name; an RLock, as execnet's is
        return threading.RLock()

    def RLock(self) -> Any:  # noqa: N802 - execnet's name
        return threading.RLock()

    def Event(self) -> threading.Event:  # noqa: N802 - execnet's name
        return threading.Event()


EXECMODELS = {name: ExecModel(name) for name in ("thread", "main_thread_only")}


def get_execmodel(backend: str | ExecModel) -> ExecModel:
    """The execution model named ``backend`` (execnet's function)."""
    if isinstance(backend, ExecModel):
        return backend
    try:
        return EXECMODELS[backend]
    except KeyError:
        raise ValueError(
            "unknown execmodel %r (asyncgw has %s)" % (backend, ", ".join(sorted(EXECMODELS)))
        ) from None
