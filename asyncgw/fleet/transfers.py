"""``Put`` and ``Get``: execo's file-copy actions (see :mod:`asyncgw.files.putget`).

``Put(hosts, local_files, remote_location)`` copies files and trees to
each host, ``Get(hosts, remote_files, local_location)`` from each host,
``scp -r`` style, keeping modes and modification times: over SFTP on the
host's shared SSH connection (through a gateway over an exec channel of
that connection if the host has no SFTP subsystem), or through a gateway. ``{{{host}}}`` and
``{{expression}}`` are substituted in every path. A put reads each
source once for all the hosts that get the same sources.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..files.putget import (
    Broadcast,
    GatewaySink,
    HostSink,
    Sink,
    get_host,
    get_through_gateway,
)
from ..transports import sshpool
from .actions import Action, Target, TargetsLike, check_params, get_targets, split_args
from .hosts import Host, resolve_params, ssh_target
from .process import TransferProcess
from .substitution import Namespace, Substitution, caller_namespace

__all__ = ["Get", "Put"]


def _paths(paths: str | Sequence[str], what: str) -> list[str]:
    items = [paths] if isinstance(paths, str) else list(paths)
    if not items or not all(isinstance(item, str) and item for item in items):
        raise ValueError(f"{what} must be a non-empty list of paths, not {paths!r}")
    return items


class _Transfer(Action):
    def __init__(
        self,
        hosts: TargetsLike,
        paths: str | Sequence[str],
        location: str,
        connection_params: Mapping[str, Any] | None,
        create_dirs: bool,
        process_args: Mapping[str, Any] | None,
        namespace: Namespace,
        kwargs: dict[str, Any],
        verb: str,
    ) -> None:
        own, per_process = split_args(kwargs, process_args)
        paths = _paths(paths, "the files")
        super().__init__(name=own.get("name") or f"{verb.title()} {paths} {location}")
        self.hosts = get_targets(hosts)
        self.connection_params = check_params(connection_params)
        self.create_dirs = create_dirs
        substitution = Substitution([*paths, location], namespace)
        #: per process: (its paths, its location), substituted for its host
        self._plans: list[tuple[list[str], str]] = []
        for index, target in enumerate(self.hosts):
            address = target.address if isinstance(target, Host) else str(target.id)
            mine = [substitution.apply(path, address, index) for path in paths]
            where = substitution.apply(location, address, index)
            self._plans.append((mine, where))
            self._own.append(
                TransferProcess(
                    f"{verb} {' '.join(mine)} {where}",
                    target,
                    self._work_for(index),
                    **per_process,
                )
            )

    def _work_for(self, index: int) -> Any:
        async def work(process: TransferProcess) -> None:
            await self._transfer(index, process)

        return work

    async def _transfer(self, index: int, process: TransferProcess) -> None:
        raise NotImplementedError

    async def _slot(self, target: Host) -> sshpool.Slot:
        params = resolve_params(target, self.connection_params)
        slot = await sshpool.acquire(ssh_target(target, params), float(params["connect_timeout"]))
        self._keep(slot)
        return slot

    def _timeout(self, target: Host) -> float:
        return float(resolve_params(target, self.connection_params)["connect_timeout"])


class Put(_Transfer):
    """Copy ``local_files`` (files or trees) to ``remote_location`` on
    each host; ``create_dirs`` makes the location first."""

    def __init__(
        self,
        hosts: TargetsLike,
        local_files: str | Sequence[str],
        remote_location: str = ".",
        connection_params: Mapping[str, Any] | None = None,
        create_dirs: bool = False,
        process_args: Mapping[str, Any] | None = None,
        *,
        namespace: Namespace | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            hosts, local_files, remote_location, connection_params, create_dirs,
            process_args, namespace or caller_namespace(1), kwargs, "put",
        )  # fmt: skip
        self._broadcasts: dict[tuple[str, ...], Broadcast] = {}

    def start(self) -> Action:
        # One read of each distinct list of sources per run, for all its hosts.
        self._broadcasts = {}
        for paths, _ in self._plans:
            key = tuple(paths)
            if key not in self._broadcasts:
                count = sum(1 for other, _ in self._plans if tuple(other) == key)
                self._broadcasts[key] = Broadcast(list(key), count)
        return super().start()

    def _sink(self, target: Target, location: str, sources: int) -> Sink:
        if isinstance(target, Host):
            return HostSink(
                lambda: self._slot(target),
                location,
                self.create_dirs,
                sources,
                self._timeout(target),
            )
        return GatewaySink(target, location, self.create_dirs, sources)

    async def _transfer(self, index: int, process: TransferProcess) -> None:
        paths, location = self._plans[index]
        broadcast = self._broadcasts[tuple(paths)]
        sink = self._sink(self.hosts[index], location, len(paths))
        opened = False
        try:
            await sink.open()
            opened = True
            await broadcast.deliver(sink)
        finally:
            if not opened:
                broadcast.drop()
            process.transferred = sink.written
            await sink.close()


class Get(_Transfer):
    """Copy ``remote_files`` (files or trees) from each host to
    ``local_location``; use ``{{{host}}}`` in it to keep hosts apart."""

    def __init__(
        self,
        hosts: TargetsLike,
        remote_files: str | Sequence[str],
        local_location: str = ".",
        connection_params: Mapping[str, Any] | None = None,
        create_dirs: bool = False,
        process_args: Mapping[str, Any] | None = None,
        *,
        namespace: Namespace | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            hosts, remote_files, local_location, connection_params, create_dirs,
            process_args, namespace or caller_namespace(1), kwargs, "get",
        )  # fmt: skip

    async def _transfer(self, index: int, process: TransferProcess) -> None:
        paths, location = self._plans[index]
        target = self.hosts[index]
        if isinstance(target, Host):
            slot = await self._slot(target)
            try:
                await get_host(slot, paths, location, self.create_dirs, self._timeout(target))
            finally:
                slot.release()
        else:
            await get_through_gateway(target, paths, location, self.create_dirs)
