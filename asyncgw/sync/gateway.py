"""The blocking facade's gateways: :class:`Gateway` of :mod:`asyncgw.sync`.

A facade gateway owns a core :class:`asyncgw.Gateway` and runs its
coroutines on the facade's loop thread (:mod:`asyncgw._loopthread`). Each
core gateway has at most one facade (:func:`present_gateway`), so that
``group[0] == group["gw0"]``, and channels found in received values arrive
as facade channels. Supervision callbacks run on a thread of their own, so
they may block and use the blocking API.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import types
import warnings
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from .. import Death, _gateway
from .._loopthread import call_blocking as _run_sync
from .._loopthread import run_blocking as _run
from ..remote.execmodel import ExecModel, get_execmodel
from .channel import Channel, present, register_gateway_facade

__all__ = ["EXIT_GRACE", "Gateway", "GroupLike", "in_thread", "present_gateway"]

log = logging.getLogger("asyncgw")


_gateway_facades: weakref.WeakKeyDictionary[_gateway.Gateway, Gateway] = weakref.WeakKeyDictionary()
_gateway_facades_lock = threading.Lock()


def present_gateway(gateway: _gateway.Gateway) -> Gateway:
    """The one facade of a core gateway (so that ``group[0] == group['gw0']``)."""
    with _gateway_facades_lock:
        facade = _gateway_facades.get(gateway)
    return facade if facade is not None else Gateway(gateway)


# Channel.gateway gives this facade: channels are told, as they are below
# gateways and cannot import them.
register_gateway_facade(present_gateway)


class GroupLike(Protocol):
    """What a gateway asks of its group (a facade :class:`Group`, which
    builds on this module)."""

    @property
    def execmodel(self) -> ExecModel:
        """The local execution model."""
        ...


class Gateway:
    """A gateway with execnet's blocking API.

    :param gateway: the core gateway it runs.
    :param group: its facade group, if it has one: execnet's ``_group``,
        whose execution model is this side's.
    """

    def __init__(self, gateway: _gateway.Gateway, group: GroupLike | None = None) -> None:
        self._gateway = gateway
        with _gateway_facades_lock:
            _gateway_facades[gateway] = self
        # Channels inside received values arrive as facades.
        gateway._router.present_channel = present
        self.id = gateway.id
        self.spec = gateway.spec
        self._group = group
        self._cache_rinfo: types.SimpleNamespace | None = None

    @property
    def execmodel(self) -> ExecModel:
        """This side's execution model (the group's)."""
        return self._group.execmodel if self._group is not None else get_execmodel("thread")

    @property
    def remote_execmodel(self) -> ExecModel:
        """The worker's execution model, as its spec chose."""
        return get_execmodel(self.spec.execmodel or "thread")

    def __repr__(self) -> str:
        return repr(self._gateway)

    def remote_exec(self, source: Any, **kwargs: Any) -> Channel:
        """Start ``source`` (text, module or function) remotely; its channel."""
        return present(_run_sync(self._gateway.remote_exec, source, **kwargs))

    def newchannel(self) -> Channel:
        """A new channel, to send to remote code as a value."""
        return present(_run_sync(self._gateway.newchannel))

    def remote_status(self) -> types.SimpleNamespace:
        """``numchannels``, ``numexecuting`` and ``execmodel`` of the worker
        (see :meth:`asyncgw.Gateway.remote_status`)."""
        return _run(self._gateway.remote_status)  # type: ignore[no-any-return]

    def remote_info(self) -> types.SimpleNamespace:
        """``executable``, ``version_info``, ``platform``, ``cwd`` and
        ``pid`` of the remote interpreter."""
        return _run(self._gateway.remote_info)  # type: ignore[no-any-return]

    def _rinfo(self, update: bool = False) -> types.SimpleNamespace:
        """execnet's cached remote info: asked once (answered by the
        worker's reader, so it works while the main thread runs code)."""
        if self._cache_rinfo is None or update:
            self._cache_rinfo = self.remote_info()
        return self._cache_rinfo

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a self-contained ``function(*args, **kwargs)`` remotely and
        return its result (see :meth:`asyncgw.Gateway.call`).

        :raises RemoteError: if it raised.
        """
        return _run(self._gateway.call, function, *args, **kwargs)

    def create(self, target: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Make an object remotely; a blocking proxy to it (see
        :mod:`asyncgw.sync.objects`)."""
        # Not at the top: execnet-style code never pays for the objects layer.
        from .objects import _unwrap, present_result

        args, kwargs = _unwrap(args), _unwrap(kwargs)
        return present_result(_run(self._gateway.create, target, *args, **kwargs))

    @property
    def remoteaddress(self) -> str | None:
        """The address the gateway reached: its ssh or socket target."""
        for key in ("ssh", "socket"):
            value = getattr(self.spec, key)
            if isinstance(value, str):
                return value
        return None

    def remote_init_threads(self, num: int | None = None) -> None:
        """Deprecated in execnet, where it does nothing: so here."""
        warnings.warn(
            "remote_init_threads() is deprecated and does nothing (as in execnet)",
            DeprecationWarning,
            stacklevel=2,
        )

    def hasreceiver(self) -> bool:
        """Whether the gateway is still connected (execnet's name)."""
        return self._gateway.is_alive

    def exit(self, timeout: float | None = None) -> None:
        """Ask the worker to exit and leave the group, without waiting (as
        execnet); code still running after :data:`EXIT_GRACE` seconds is
        interrupted and the worker exits. :meth:`join` waits for it.

        With ``timeout``, block instead until it has exited, killing it
        after ``timeout`` seconds.
        """
        if timeout is None:
            _run_sync(self._gateway.request_exit, EXIT_GRACE)
        else:
            _run(self._gateway.exit, timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the connection has ended."""
        _run(_wait_for, self._gateway.wait_closed, timeout)

    # -- supervision (asyncgw.Death)

    @property
    def death(self) -> Death | None:
        """How the gateway ended, once it has (None while it runs)."""
        return self._gateway.death

    def on_death(self, callback: Callable[[Death], object]) -> None:
        """Call ``callback(death)`` in a thread of its own once the gateway
        has ended (an exception there is logged)."""
        _run_sync(self._gateway.on_death, in_thread(callback))

    def died(self, timeout: float | None = None) -> Death:
        """Block until the gateway has ended; return how.

        :raises TimeoutError: if it has not after ``timeout`` seconds.
        """
        return _run(_died, self._gateway, timeout)  # type: ignore[no-any-return]


async def _died(gateway: _gateway.Gateway, timeout: float | None) -> Death:
    async with asyncio.timeout(timeout):
        return await gateway.died()


def in_thread(callback: Callable[..., object]) -> Callable[..., None]:
    """``callback``, called from the loop, run in a thread of its own: it
    may block and use the facade."""

    def run(*args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("supervision callback %r failed", callback)

    def start(*args: object) -> None:
        try:
            threading.Thread(target=run, args=args, name="asyncgw-supervision", daemon=True).start()
        except RuntimeError:  # interpreter shutdown: no new threads
            log.debug("supervision callback %r not called: shutting down", callback)

    return start


async def _wait_for(function: Callable[[], Any], timeout: float | None) -> None:
    async with asyncio.timeout(timeout):
        await function()


#: Seconds a worker told to exit by :meth:`Gateway.exit` lets its running
#: code go on before interrupting it (execnet's figure).
EXIT_GRACE = 5.0
