"""Gateway: one remote interpreter, its router and its channels.

A gateway is opened by :func:`open_gateway` (groups call it): the transport
starts the interpreter, the router waits for the worker's greeting, and
only then does the gateway exist for the caller. Whatever fails or is
cancelled on the way kills the interpreter before the error propagates.

The start goes downward only: the group hands its spec and an
:class:`~asyncgw.transports.OpenContext` (its fork servers among what it
carries) to :func:`~asyncgw.transports.open_transport` and gets a stream
back; nothing here asks the group again. Services of the layers above
(log and import forwarding, remote objects) come in through
:mod:`._hooks`; deaths are :mod:`._supervision`'s.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import types
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import _hooks
from ._channel import DEFAULT_WINDOW, Channel
from ._code import call_request, exec_request
from ._errors import BootstrapError, GatewayError, TimeoutError
from ._router import Router
from ._supervision import Death, DeathWatch
from ._wire import DEFAULT_MAX_PAYLOAD, EXEC, REQUEST, TERMINATE, check_frame_size, dumps
from .transports import OpenContext, open_transport
from .transports._base import DEFAULT_CONNECT_TIMEOUT

if TYPE_CHECKING:
    from ._group import Group
    from ._spec import XSpec
    from .transports import Transport

__all__ = ["Gateway", "open_gateway"]

log = logging.getLogger("asyncgw")

#: Seconds an exit waits, once the worker is gone, for services to handle
#: what it sent last (see Gateway.add_drain).
DRAIN_WAIT = 5.0


class Gateway:
    """A connection to one remote interpreter. Made by ``Group.makegateway``."""

    def __init__(self, spec: XSpec, group: Group | None, window: int = DEFAULT_WINDOW) -> None:
        assert spec.id is not None
        self.id: str = spec.id
        self.spec = spec
        self.group = group
        self.window = window
        self._router = Router(
            self.id, self._make_channel, int(spec.max_frame or DEFAULT_MAX_PAYLOAD)
        )
        self._transport: Transport | None = None
        self._next_id = 1  # this side numbers its channels odd
        self._hello: dict[str, Any] = {}
        self._exiting = False
        self._watch = DeathWatch(self)  # its death, as an event
        self._drains: list[Callable[[], Awaitable[object]]] = []

    def __repr__(self) -> str:
        state = "receive-live" if self.is_alive else "not-receiving"
        model = self.spec.execmodel or "thread"
        active = len(self._router.channels)
        return f"<Gateway id={self.id!r} {state}, {model} model, {active} active channels>"

    @property
    def is_alive(self) -> bool:
        """True until the remote interpreter is gone or asked to exit."""
        return self._router.lost is None and not self._exiting

    @property
    def remote_pid(self) -> int | None:
        """The worker's process id as it reported it (on its own host)."""
        pid = self._hello.get("pid")
        return pid if isinstance(pid, int) else None

    # -- channels

    def _make_channel(self, ident: int) -> Channel:
        return Channel(self, self._router, ident)

    def newchannel(self) -> Channel:
        """A new channel, to send to remote code as a value."""
        self._router.check_alive()
        ident = self._next_id
        self._next_id += 2
        return self._router.channel_for_id(ident)

    def remote_exec(
        self, source: str | types.ModuleType | Callable[..., Any], **kwargs: Any
    ) -> Channel:
        """Start ``source`` remotely and return its channel at once.

        ``source`` is source text, a module, or a self-contained function
        taking ``channel`` first (``kwargs`` are passed to it). Code that
        uses top-level ``await``, or an ``async def`` function, runs on the
        remote event loop with an awaitable channel.

        :raises TypeError, ValueError: for what cannot be sent (see ``_code``).
        :raises DumpError: if ``kwargs`` hold a type the wire cannot carry.
        :raises GatewayLost: if the gateway is gone.
        """
        request = exec_request(source, kwargs)
        payload = check_frame_size(dumps(request), self._router.max_frame)
        channel = self.newchannel()
        self._router.write_frame(EXEC, channel.id, payload)
        return channel

    async def call(self, function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run a self-contained ``function(*args, **kwargs)`` remotely and
        return its result (``async def`` functions are awaited remotely).

        Cancelling abandons the result; the remote call is not interrupted.

        :raises RemoteError: if the function raised.
        """
        channel = self.remote_exec(call_request(function))
        await channel.send((args, kwargs))
        return await channel.receive()

    async def create(self, target: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Make an object remotely and return a proxy to it (a value, if the
        constructor's result is one): ``target`` is a class importable
        there, ``"package.module:Name"``, or a self-contained class, shipped
        as source. See :mod:`asyncgw.objects.proxy`.

        :raises RemoteError: if the remote construction raised.
        """
        create = _hooks.object_factory()  # asyncgw.objects registers it
        return await create(self, target, *args, **kwargs)

    async def _request(self, what: str) -> dict[str, Any]:
        channel = self.newchannel()
        self._router.write_frame(REQUEST, channel.id, what.encode("ascii"))
        answer = await channel.receive()
        assert isinstance(answer, dict)
        return answer

    async def remote_status(self) -> types.SimpleNamespace:
        """``numchannels``, ``numexecuting`` and ``execmodel`` of the worker,
        answered by its reader without running any code. Cancelling
        abandons the answer."""
        return types.SimpleNamespace(**await self._request("status"))

    async def remote_info(self) -> types.SimpleNamespace:
        """``executable``, ``version_info``, ``platform``, ``cwd`` and ``pid``
        of the remote interpreter. Cancelling abandons the answer."""
        return types.SimpleNamespace(**await self._request("info"))

    # -- lifetime

    def request_exit(self, grace: float | None = None) -> None:
        """Ask the worker to exit once its running code finishes, and leave
        the group; do not wait. With ``grace``, code still running that many
        seconds later is interrupted (``KeyboardInterrupt`` in the main
        thread) and the worker exits regardless, as execnet's workers do."""
        self._exiting = True
        self._watch.requested = self._watch.requested or "asked to exit"
        if self.group is not None:
            self.group._remove(self)
        if self._transport is not None and self._router.lost is None:
            self._router.write_frame(TERMINATE, 0, b"" if grace is None else b"%f" % grace)

    async def exit(self, timeout: float | None = None) -> None:
        """Ask the worker to exit once its running code finishes, wait up to
        ``timeout`` seconds (None: as long as it takes), then kill it.
        Leaves the group. Returns once the interpreter is gone (and its
        :class:`Death` reported).

        Cancelling kills the interpreter at once and still waits for it.
        """
        self.request_exit()
        transport = self._transport
        if transport is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await transport.wait_closed()
        except builtins.TimeoutError:
            await asyncio.shield(transport.kill())
        except asyncio.CancelledError:
            await asyncio.shield(transport.kill())
            raise
        finally:
            if self._router.lost is None:
                self._router.connection_lost("the gateway exited")
        if self._drains:
            # What the worker sent before it exited is handled before we return.
            with contextlib.suppress(builtins.TimeoutError):
                async with asyncio.timeout(DRAIN_WAIT):
                    await asyncio.gather(*(drain() for drain in self._drains))
        await self._watch.settled()  # its death is reported when exit returns

    def add_drain(self, drain: Callable[[], Awaitable[object]]) -> None:
        """Have :meth:`exit` await ``drain()`` (at most :data:`DRAIN_WAIT`
        seconds in all) once the worker is gone: for a service that handles
        what the worker sent last (log forwarding)."""
        self._drains.append(drain)

    async def kill(self) -> None:
        """End the remote interpreter now, without asking. The kill runs to
        its end even if the caller is cancelled."""
        self._exiting = True
        self._watch.requested = self._watch.requested or "killed on request"
        if self.group is not None:
            self.group._remove(self)
        if self._transport is not None:
            await asyncio.shield(self._transport.kill())
        self._router.connection_lost("the gateway was killed")
        await self._watch.settled()

    async def wait_closed(self) -> None:
        """Wait until the connection to the worker has ended. Cancelling the
        wait changes nothing."""
        await self._router.closed.wait()

    # -- supervision (asyncgw/_supervision.py)

    @property
    def death(self) -> Death | None:
        """How the gateway ended, once it has (None while it runs)."""
        return self._watch.death

    def on_death(self, callback: Callable[[Death], object]) -> None:
        """Call ``callback(death)`` on the event loop once the gateway has
        ended — at once (soon) if it already has. An exception in a callback
        is logged, not raised."""
        self._watch.add_callback(callback)

    async def died(self) -> Death:
        """Wait until the gateway has ended and return how. Cancelling the
        wait changes nothing."""
        return await self._watch.wait()


async def open_gateway(
    spec: XSpec,
    group: Group | None,
    window: int = DEFAULT_WINDOW,
    context: OpenContext | None = None,
) -> Gateway:
    """Start the interpreter ``spec`` names and return its gateway once the
    worker has greeted us and the registered start hooks (:mod:`._hooks`)
    have run.

    :param context: what the transport gets besides the spec (the group
        passes its fork servers there); default: just ``group``.

    Cancelling kills the half-started interpreter before re-raising.

    :raises SpecError: for a spec no transport serves.
    :raises HostNotFound: if the interpreter or host cannot be reached.
    :raises BootstrapError: if it did not come up as a worker in time.
    """
    gateway = Gateway(spec, group, window)
    config = {
        "id": gateway.id,
        "window": window,
        "execmodel": spec.execmodel or "thread",
        "chdir": spec.chdir,
        "nice": spec.nice,
        "env": dict(spec.env),
        "dont_write_bytecode": bool(spec.dont_write_bytecode),
        "max_frame": gateway._router.max_frame,
        "execnet_alias": bool(group is not None and group.execnet_alias),
    }
    timeout = float(spec.connect_timeout or DEFAULT_CONNECT_TIMEOUT)
    context = OpenContext(group=group) if context is None else context
    transport = await open_transport(spec, gateway._router, config, context)
    gateway._transport = transport
    try:
        gateway._router.attach(transport)
        async with asyncio.timeout(timeout):
            gateway._hello = await gateway._router.hello
    except BaseException as exc:
        await asyncio.shield(transport.kill())
        gateway._router.connection_lost("start-up failed")
        if isinstance(exc, builtins.TimeoutError):
            raise TimeoutError(
                f"gateway {gateway.id!r} ({spec}) did not start within {timeout}s"
            ) from None
        if isinstance(exc, GatewayError):
            message = f"{spec} did not start: {exc}"
            diagnosis = transport.diagnosis()  # the process is gone now: complete
            if diagnosis and diagnosis not in message:
                message = f"{message} ({diagnosis})"
            raise BootstrapError(message, gateway.id) from None
        raise
    try:
        for hook in list(_hooks.START_HOOKS):
            await hook(gateway)
    except BaseException:
        await gateway.kill()
        raise
    gateway._watch.arm()  # from now on, its end is an event
    return gateway
