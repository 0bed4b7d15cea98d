"""The far side of import forwarding (:mod:`asyncgw.objects.imports`).

Shipped as source by ``gateway.remote_exec(this_module)``: stdlib only,
Python 3.9 syntax. The setup code receives the allowed top-level names,
puts finders on ``sys.meta_path``, sends back the channel they ask on and
ends; the finders keep that channel.

Invariants: only names under an allowed top-level name are ever asked for,
and a submodule only when its parent came from the caller, so a module
this interpreter has is never mixed with the caller's. By default the
finder comes after the normal ones (a module found here is not shadowed);
names given as shadowed get a finder placed first. One request is in the
air at a time (a lock), each with an id, so a late answer after a timeout
is never taken for the next one. The conversation::

    R: (request id, "pkg.mod")
    L: (request id, ("module", source, filename, is_package))
     | (request id, ("missing", reason))    -> not found: the next finder
     | (request id, ("refused", reason))    -> ImportError(reason)

A forwarded module's source is registered in ``linecache`` under its
original file name (and its loader has ``get_source``), so tracebacks
through it show its lines; its ``__path__`` is empty, so the normal
finders never look for its submodules on this machine's disk.
"""

from __future__ import annotations

import linecache
import sys
import threading
from importlib.machinery import ModuleSpec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: Seconds an import waits for the caller's answer.
TIMEOUT = 60.0


class ImportClient:
    """Asks the caller for modules, one request at a time."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.reading = channel._worker.reading  # the worker's reading duty (remote.reading)
        self.lock = threading.Lock()
        self.next_id = 0

    def request(self, fullname: str) -> tuple[Any, ...]:
        # The answer comes through the reader: a served request (an object's
        # method) hands the reading over first; a plain callback cannot.
        if not self.reading.step_aside():
            raise ImportError(
                "%s cannot be fetched from the caller from a channel callback "
                "(the worker's reader thread would wait for itself)" % fullname,
                name=fullname,
            )
        with self.lock:
            self.next_id += 1
            ident = self.next_id
            try:
                self.channel.send((ident, fullname))
                while True:
                    answer_id, answer = self.channel.receive(TIMEOUT)
                    if answer_id == ident:
                        return tuple(answer)
            except TimeoutError:
                raise ImportError(
                    "the caller did not send %s within %ss" % (fullname, TIMEOUT), name=fullname
                ) from None
            except Exception as exc:  # the channel ended: the gateway is going
                raise ImportError(
                    "cannot fetch %s from the caller: %s" % (fullname, exc), name=fullname
                ) from None


class ForwardedLoader:
    """Executes a module from the source the caller sent."""

    def __init__(self, fullname: str, source: str, filename: str | None, package: bool) -> None:
        self.name = fullname
        self.source = source
        self.filename = filename or "<forwarded %s>" % fullname
        self.package = package

    def create_module(self, spec: ModuleSpec) -> None:
        return None  # the default module

    def exec_module(self, module: Any) -> None:
        lines = self.source.splitlines(True)
        linecache.cache[self.filename] = (len(self.source), None, lines, self.filename)
        # dont_inherit: this file's __future__ imports are not the module's.
        code = compile(self.source, self.filename, "exec", dont_inherit=True)
        exec(code, module.__dict__)

    def get_source(self, fullname: str) -> str:
        return self.source

    def is_package(self, fullname: str) -> bool:
        return self.package

    def get_filename(self, fullname: str) -> str:
        return self.filename


class ForwardedImportFinder:
    """A ``sys.meta_path`` finder for the allowed names."""

    def __init__(self, client: ImportClient, names: list[str]) -> None:
        self.client = client
        self.names = frozenset(names)

    def __repr__(self) -> str:
        return "<ForwardedImportFinder %s>" % ",".join(sorted(self.names))

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        top, _, rest = fullname.partition(".")
        if top not in self.names:
            return None
        if rest:  # only into packages that came from the caller
            parent = sys.modules.get(fullname.rpartition(".")[0])
            spec = getattr(parent, "__spec__", None)
            if type(getattr(spec, "loader", None)).__name__ != "ForwardedLoader":
                return None
        answer = self.client.request(fullname)
        if answer[0] == "missing":
            return None
        if answer[0] != "module":
            raise ImportError(
                "the caller refused to send %s: %s" % (fullname, answer[1]), name=fullname
            )
        _, source, filename, package = answer
        loader = ForwardedLoader(fullname, source, filename, bool(package))
        # A loader by protocol (importlib.abc is not imported for it).
        spec = ModuleSpec(
            fullname,
            loader,  # type: ignore[arg-type]
            origin=loader.filename,
            is_package=bool(package),
        )
        spec.has_location = filename is not None  # __file__, for tracebacks and inspect
        return spec


def install(channel: Any) -> None:
    options = channel.receive()
    shadow = list(options.get("shadow") or ())
    names = [name for name in options["names"] if name not in shadow]
    requests = channel.gateway.newchannel()
    client = ImportClient(requests)
    # Replace the finders of an earlier install (a class of its own).
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "ForwardedImportFinder"]
    if shadow:
        sys.meta_path.insert(0, ForwardedImportFinder(client, shadow))
    if names:
        sys.meta_path.append(ForwardedImportFinder(client, names))
    channel.send(requests)


if __name__ == "__channelexec__":
    install(channel)  # type: ignore[name-defined]  # noqa: F821
