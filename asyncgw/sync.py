"""The blocking facade: execnet's API over the async core.

``import asyncgw.sync as execnet`` runs execnet-style code unchanged::

    group = execnet.Group(["popen"] * 2)          # members start in parallel
    channel = group[0].remote_exec("channel.send(channel.receive() + 1)")
    channel.send(1)
    assert channel.receive() == 2
    group.terminate(timeout=1.0)

Every method runs the async implementation on one event-loop thread per
process (:mod:`asyncgw._loopthread`); nothing here decides anything the
core does not. The channels, with the hand-offs that spare the hot paths a
trip through the loop thread, are in :mod:`asyncgw._sync_channel`.

Works the same from scripts, REPLs, threads and Jupyter kernels (whose
main thread runs a loop of its own: we never block *our* loop's thread).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import sys
import threading
import types
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

from . import __version__, _gateway, _group, _wire
from ._errors import (
    DataFormatError,
    DumpError,
    HostNotFound,
    LoadError,
    RemoteError,
    TimeoutError,
)
from ._loopthread import call_blocking as _run_sync
from ._loopthread import loop_thread
from ._loopthread import run_blocking as _run
from ._spec import XSpec
from ._sync_channel import NO_ENDMARKER as NO_ENDMARKER
from ._sync_channel import Channel, MultiChannel, present
from ._sync_pool import Executor as Executor
from ._sync_rsync import RSync
from ._tasks import run_all
from .objects.supervision import Death, RestartPolicy
from .remote.execmodel import ExecModel, get_execmodel

#: execnet 2.1's public names, exactly (NO_ENDMARKER and the like stay
#: importable by name).
__all__ = [
    "Channel",
    "DataFormatError",
    "DumpError",
    "Gateway",
    "Group",
    "HostNotFound",
    "LoadError",
    "MultiChannel",
    "RSync",
    "RemoteError",
    "TimeoutError",
    "XSpec",
    "__version__",
    "default_group",
    "dump",
    "dumps",
    "load",
    "loads",
    "makegateway",
    "set_execmodel",
]

T = TypeVar("T")
log = logging.getLogger("asyncgw")

# ------------------------------------------------------------------ gateways


_gateway_facades: weakref.WeakKeyDictionary[_gateway.Gateway, Gateway] = weakref.WeakKeyDictionary()


_gateway_facades_lock = threading.Lock()


def _gateway_facade(gateway: _gateway.Gateway) -> Gateway:
    """The one facade of a core gateway (so that ``group[0] == group['gw0']``)."""
    with _gateway_facades_lock:
        facade = _gateway_facades.get(gateway)
    return facade if facade is not None else Gateway(gateway)


class Gateway:
    """A gateway with execnet's blocking API."""

    def __init__(self, gateway: _gateway.Gateway, group: Group | None = None) -> None:
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
        :mod:`asyncgw._sync_objects`)."""
        from ._sync_objects import _unwrap, present_result

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

    # -- supervision (asyncgw.objects.supervision)

    @property
    def death(self) -> Death | None:
        """How the gateway ended, once it has (None while it runs)."""
        return self._gateway.death

    def on_death(self, callback: Callable[[Death], object]) -> None:
        """Call ``callback(death)`` in a thread of its own once the gateway
        has ended (an exception there is logged)."""
        _run_sync(self._gateway.on_death, _in_thread(callback))

    def died(self, timeout: float | None = None) -> Death:
        """Block until the gateway has ended; return how.

        :raises TimeoutError: if it has not after ``timeout`` seconds.
        """
        return _run(_died, self._gateway, timeout)  # type: ignore[no-any-return]


async def _died(gateway: _gateway.Gateway, timeout: float | None) -> Death:
    async with asyncio.timeout(timeout):
        return await gateway.died()


def _in_thread(callback: Callable[..., object]) -> Callable[..., None]:
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

_live_groups: weakref.WeakSet[Group] = weakref.WeakSet()
#: Seconds groups left open at interpreter exit get before being killed.
EXIT_TIMEOUT = 1.0


async def _terminate_live_groups() -> None:
    await run_all(group._group.terminate(EXIT_TIMEOUT) for group in list(_live_groups))


class Group:
    """Gateways managed together, execnet style: ``Group(["popen"] * 2)``
    starts both members (in parallel) before returning. ``restart``,
    ``forward_logs`` and ``forward_imports`` are the async
    :class:`asyncgw.Group`'s."""

    def __init__(
        self,
        xspecs: Iterable[XSpec | str] = (),
        execmodel: str = "thread",
        *,
        restart: RestartPolicy | int | None = None,
        forward_logs: bool = False,
        forward_imports: Iterable[str] = (),
    ) -> None:
        self._group = _group.Group(
            restart=restart, forward_logs=forward_logs, forward_imports=forward_imports
        )
        # A restarted member's facade belongs to this group, as the first.
        self._group.on_restart(lambda gateway, death: Gateway(gateway, self))
        self._prestarted: dict[str, Gateway] = {}
        self.set_execmodel(execmodel)
        with _live_lock:
            if not _live_groups and _terminate_live_groups not in loop_thread.shutdown_hooks:
                loop_thread.shutdown_hooks.append(_terminate_live_groups)
            _live_groups.add(self)
        specs = list(xspecs)
        if specs:
            self.makegateways(specs)

    @property
    def execmodel(self) -> ExecModel:
        """The local execution model (threads either way here)."""
        return self._execmodel

    @property
    def remote_execmodel(self) -> ExecModel:
        """The execmodel of members whose spec names none."""
        return self._remote_execmodel

    def set_execmodel(self, execmodel: str, remote_execmodel: str | None = None) -> None:
        """Choose the execution models, before any member exists:
        ``thread`` or ``main_thread_only`` (remote code on the worker's main
        thread); ``remote_execmodel`` defaults to ``execmodel``.

        :raises ValueError: for another model, or once the group has members.
        """
        if len(self._group):
            raise ValueError("can not set execution models if gateways have been created already")
        self._execmodel = get_execmodel(execmodel)
        self._remote_execmodel = get_execmodel(remote_execmodel or execmodel)
        self._group.execmodel = self._remote_execmodel.backend

    @property
    def defaultspec(self) -> str:
        """The spec of :meth:`makegateway` without one (``popen``)."""
        return self._group.defaultspec

    @defaultspec.setter
    def defaultspec(self, spec: str) -> None:
        self._group.defaultspec = spec

    def __repr__(self) -> str:
        return repr(self._group)

    def __len__(self) -> int:
        return len(self._group)

    def __iter__(self) -> Iterator[Gateway]:
        return iter([_gateway_facade(gw) for gw in self._group])

    def __contains__(self, key: object) -> bool:
        if isinstance(key, Gateway):
            key = key._gateway
        return key in self._group

    def __getitem__(self, key: int | str) -> Gateway:
        return _gateway_facade(self._group[key])

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate(self._group.exit_timeout)

    def allocate_id(self, spec: XSpec) -> None:
        """Give ``spec`` the next free ``gwN`` id if it has none."""
        self._group.allocate_id(spec)

    def _sync_options(self) -> None:
        # Remote code finds execnet where ours is execnet (pytest-xdist's
        # worker side imports it): see asyncgw._execnet_compat.
        self._group.execnet_alias = sys.modules.get("execnet") is sys.modules[__name__]

    def makegateway(self, spec: XSpec | str | None = None) -> Gateway:
        """Start a member for ``spec`` (default: :attr:`defaultspec`).

        :raises SpecError: (a ``ValueError``) for a spec no gateway is made from.
        :raises HostNotFound: if the interpreter or host cannot be reached.
        """
        if isinstance(spec, XSpec) and spec.id is not None:
            started = self._prestarted.pop(spec.id, None)
            if started is not None and started._gateway.is_alive:
                return started
        self._sync_options()
        return Gateway(_run(self._group.makegateway, spec), self)

    def _prestart(self, specs: list[XSpec]) -> None:
        """Start the members of ``specs`` (which have ids) in parallel now,
        for callers that will ask for them one by one (pytest-xdist): a later
        ``makegateway`` of one of these specs returns its gateway. If any
        fails to start, none is kept, and ``makegateway`` reports its error."""
        if any(spec.id is None for spec in specs):
            return
        try:
            gateways = self.makegateways(specs)
        except Exception as exc:  # each makegateway will tell its own error
            log.debug("starting %d gateways at once failed (%s)", len(specs), exc)
            return
        self._prestarted.update((gateway.id, gateway) for gateway in gateways)

    def makegateways(self, specs: Iterable[XSpec | str]) -> list[Gateway]:
        """Start members for all ``specs`` in parallel; all or nothing."""
        self._sync_options()
        return [Gateway(gateway, self) for gateway in _run(self._group.makegateways, list(specs))]

    def remote_exec(self, source: Any, **kwargs: Any) -> MultiChannel:
        """Start ``source`` on every member; their channels as one."""
        return MultiChannel(gateway.remote_exec(source, **kwargs) for gateway in self)

    def terminate(self, timeout: float | None = None) -> None:
        """Exit all members in parallel; kill those still there after
        ``timeout`` seconds."""
        _run(self._group.terminate, timeout)

    def on_death(self, callback: Callable[[Death], object]) -> None:
        """Call ``callback(death)`` in a thread of its own whenever a member
        ends (see :meth:`asyncgw.Group.on_death`)."""
        self._group.on_death(_in_thread(callback))

    def on_restart(self, callback: Callable[[Gateway, Death], object]) -> None:
        """Call ``callback(gateway, death)`` in a thread of its own when the
        restart policy has replaced a dead member with ``gateway``."""
        thread = _in_thread(callback)
        self._group.on_restart(lambda gateway, death: thread(_gateway_facade(gateway), death))


_live_lock = threading.Lock()

#: The group of the module-level :func:`makegateway`.
default_group = Group()


def makegateway(spec: XSpec | str | None = None) -> Gateway:
    """A gateway in :data:`default_group`."""
    return default_group.makegateway(spec)


def set_execmodel(execmodel: str, remote_execmodel: str | None = None) -> None:
    """Set the execution models of :data:`default_group` (see
    :meth:`Group.set_execmodel`)."""
    default_group.set_execmodel(execmodel, remote_execmodel)


_FLEET_TWINS = frozenset(
    {"Action", "Get", "Local", "ParallelActions", "Put", "Remote", "SequentialActions"}
)
_OBJECTS = frozenset({"fetch"})
_FLEET_SHARED = frozenset(
    {"Host", "Report", "default_connection_params", "expand", "fold", "get_hosts_list"}
)


def __getattr__(name: str) -> Any:
    # execnet's submodules (execnet.gateway_base, ...), for code that reaches
    # them through the package once `execnet` is this module.
    from ._execnet_compat import SUBMODULES, submodule

    if name in SUBMODULES:
        return submodule(name)
    # The fleet's blocking twins, imported on first use: execnet-style code
    # (and pytest-xdist's workers) never pays for asyncssh's import here.
    if name in _FLEET_TWINS:
        from . import _sync_fleet

        return getattr(_sync_fleet, name)
    if name in _FLEET_SHARED:
        from . import fleet

        return getattr(fleet, name)
    if name in _OBJECTS:
        from . import _sync_objects

        return getattr(_sync_objects, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------ serializer

dumps = _wire.dumps
loads = _wire.loads
_LENGTH = struct.Struct("!I")


def dump(file: IO[bytes], obj: object) -> None:
    """Write ``obj`` to a binary file, readable by :func:`load`."""
    data = _wire.dumps(obj)
    file.write(_LENGTH.pack(len(data)) + data)


def load(file: IO[bytes]) -> Any:
    """Read one value written by :func:`dump`.

    :raises EOFError: at the end of the file.
    :raises LoadError: for malformed data.
    """
    header = file.read(_LENGTH.size)
    if not header:
        raise EOFError("no more values in file")
    if len(header) < _LENGTH.size:
        raise LoadError("truncated value header")
    (size,) = _LENGTH.unpack(header)
    data = file.read(size)
    if len(data) < size:
        raise LoadError("truncated value")
    return _wire.loads(data)
