"""The fork server: an interpreter, started once, that forks popen workers.

Starting an interpreter costs tens of milliseconds (on this project's
machines a third of it is ``site``); forking one that has already started,
with the worker modules compiled, costs about two. A group that starts
several popen gateways of the same interpreter at once starts one of these
and asks it for the workers (see ``transports/forkserver.py``).

Runs remotely like ``worker`` (stdlib only, Python >= 3.9 syntax), on a
Unix stream socket to the local side as fd 0. Over it, in ``_wire`` frames:

- local -> here: ``DATA`` (request id, ``dumps(config)``), sent together
  with three file descriptors (the worker's stdin, stdout and stderr);
  answered by ``DATA`` (request id, ``dumps(pid)``) or ``CLOSE_ERROR``.
- here -> local: ``DATA`` (0, ``dumps([pid, exit code])``) for every worker
  that ended — this process is their parent and reaps them.

End of input ends the fork server; its workers stay (they end at the end of
their own input, like any worker).
"""

import os
import select
import signal
import socket
import sys

from .._wire import CLOSE_ERROR, DATA, HELLO, MAGIC, FrameDecoder, dumps, encode_frame, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List

#: File descriptors that come with each request: stdin, stdout, stderr.
FDS_PER_REQUEST = 3


def main(config: "dict[str, Any]") -> None:
    control = socket.socket(fileno=os.dup(0))
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # nothing may write into the control stream by accident
    os.close(devnull)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, _ignore)  # a handler, so that the wake-up fd is written
    _preload(config.get("preload") or [])
    control.sendall(MAGIC + encode_frame(HELLO, 0, dumps({"pid": os.getpid(), "forkserver": True})))
    decoder = FrameDecoder()
    fds: "List[int]" = []
    wait = _waiter([control.fileno(), wake_r])
    while True:
        readable = wait()
        if wake_r in readable:
            os.read(wake_r, 4096)
            _reap(control)
        if control.fileno() not in readable:
            continue
        data, received, _flags, _addr = socket.recv_fds(control, 65536, 64)
        fds.extend(received)
        if not data:
            os._exit(0)  # the local side is done (or gone)
        for _msgtype, request, payload in decoder.feed(data):
            streams, fds = fds[:FDS_PER_REQUEST], fds[FDS_PER_REQUEST:]
            _fork(control, request, loads(payload), streams, (wake_r, wake_w))


def _waiter(fds: "List[int]") -> "Callable[[], List[int]]":
    """A blocking wait for the readable ones of ``fds``: poll, which, unlike
    select, takes descriptors numbered 1024 and above (the limit may have
    been raised for the local side, which we inherit)."""
    if not hasattr(select, "poll"):
        return lambda: select.select(fds, [], [])[0]
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return lambda: [fd for fd, _events in poller.poll()]


def _preload(names: "List[str]") -> None:
    """Import what every worker will need, once, before any fork."""
    for name in names:
        try:
            __import__(name)
        except BaseException as exc:  # a worker imports it again, and fails there
            os.write(2, ("asyncgw fork server: preload of %r failed: %r\n" % (name, exc)).encode())


def _ignore(signum: int, frame: object) -> None:
    pass


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        control.sendall(encode_frame(DATA, 0, dumps([pid, code])))


def _fork(
    control: socket.socket,
    request: int,
    config: "dict[str, Any]",
    streams: "List[int]",
    wake: "tuple[int, int]",
) -> None:
    if len(streams) != FDS_PER_REQUEST:
        reply = encode_frame(CLOSE_ERROR, request, b"request without its three streams")
    else:
        try:
            pid = os.fork()
        except OSError as exc:
            reply = encode_frame(CLOSE_ERROR, request, str(exc).encode("utf-8", "replace"))
        else:
            if pid == 0:
                _become_worker(control, config, streams, wake)
            reply = encode_frame(DATA, request, dumps(pid))
    for fd in streams:
        os.close(fd)
    control.sendall(reply)


def _become_worker(
    control: socket.socket, config: "dict[str, Any]", streams: "List[int]", wake: "tuple[int, int]"
) -> None:
    """In the child: shed the fork server's state, take the three streams as
    fds 0-2 in a session of its own (as popen's children have), run a worker."""
    status = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in wake:
            os.close(fd)
        control.close()
        os.setsid()
        for target, fd in enumerate(streams):
            os.dup2(fd, target)
            os.close(fd)
        from . import worker

        worker.main(config)
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(status)
