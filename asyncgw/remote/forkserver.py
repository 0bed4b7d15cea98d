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

With ``listen`` in its config (ssh gateways: ``transports/sshfork.py``) it
is started in an exec session, fd 0 and 1 being pipes from sshd, and
passes no descriptors. It makes a fresh directory, mode 0700, in the temp
directory and listens on a Unix socket there, whose path its HELLO names;
the local side reaches it over the same SSH connection (direct-streamlocal
channels). Each accepted connection first carries one ``DATA`` (request
id, ``dumps(config)``) frame; the fork server reads exactly that frame and
forks a worker whose stdin and stdout are the connection and whose stderr
is its own. Replies and exit reports travel on fd 1 as above; on fd 0 the
local side may send ``DATA`` (0, ``dumps(["kill", pid])``) to kill a
worker's process group (only a child that has not been reaped). A
connection from another user (``SO_PEERCRED``, where the system has it) is
closed unread. End of input removes the socket and the directory; a
fork server that was killed leaves them, and the next one to start
removes them (only this user's, only when their socket no longer listens).
"""

import _signal  # type: ignore[import-not-found]  # signal's own C module: no stub
import gc
import os
import select
import signal
import socket
import stat
import struct
import sys
import time

from .._wire import (
    CLOSE_ERROR,
    DATA,
    HEADER,
    HEADER_SIZE,
    HELLO,
    MAGIC,
    FrameDecoder,
    dumps,
    encode_frame,
    loads,
)
from . import worker as _worker

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List

#: File descriptors that come with each request: stdin, stdout, stderr.
FDS_PER_REQUEST = 3
#: The largest request (a worker's config) a listening fork server reads.
MAX_REQUEST = 1024 * 1024
#: Longest Unix socket path that binds everywhere (sun_path is 104-108 bytes).
MAX_SOCKET_PATH = 100
#: Requests forked in one batch at most (the local side sends 16 ahead).
MAX_BATCH = 64
#: recv's flag for "do not wait", where the system has it.
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", None)
#: Seconds after which the directory of a fork server whose socket no
#: longer listens is removed by the next one (see ``_sweep``).
STALE_AFTER = 60.0


def main(config: "dict[str, Any]") -> None:
    if config.get("listen"):
        _Listener(config).serve()
        return
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
    _prepare()
    control.sendall(MAGIC + encode_frame(HELLO, 0, dumps({"pid": os.getpid(), "forkserver": True})))
    decoder = FrameDecoder()
    fds: "List[int]" = []
    wait = _waiter([control.fileno(), wake_r])
    while True:
        readable = wait()
        if wake_r in readable:
            os.read(wake_r, 4096)
            _reap(control.sendall)
        if control.fileno() not in readable:
            continue
        # Every request already sent, forked back to back (see _fork_batch).
        batch: "List[Any]" = []
        ended = False
        flags = 0
        while len(batch) < MAX_BATCH:
            try:
                data = _receive(control, fds, flags)
            except BlockingIOError:
                break
            if not data:
                ended = True  # the local side is done (or gone)
                break
            for _msgtype, request, payload in decoder.feed(data):
                streams, fds = fds[:FDS_PER_REQUEST], fds[FDS_PER_REQUEST:]
                batch.append((request, loads(payload), streams))
            if _DONTWAIT is None:
                break
            flags = _DONTWAIT
        if batch:
            _fork_batch(control, batch, [wake_r, wake_w, *fds])
        if ended:
            os._exit(0)


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


def _prepare() -> None:
    """Before the first fork: do here what every worker does first
    (``worker.prepare``: gc frozen, stdout line-buffered) and rehearse the
    rest of its start (``worker.rehearse``), so that each child finds it
    done, in pages it shares with this process, rather than writing (hence
    copying) them again."""
    _worker.rehearse()
    gc.collect()  # the rehearsals' workers (cycles), not frozen with the rest
    _worker.prepare()


def _ignore(signum: int, frame: object) -> None:
    pass


def _reap(send: "Callable[[bytes], Any]") -> "List[int]":
    """Reap every ended child, reporting each through ``send``; return their pids."""
    reaped: "List[int]" = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append(pid)
        send(encode_frame(DATA, 0, dumps([pid, _exit_code(status)])))


def _exit_code(status: int) -> int:
    """os.waitstatus_to_exitcode, which Python 3.8 lacks: minus the signal
    that ended the process, else its exit status."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _receive(control: socket.socket, fds: "List[int]", flags: int) -> bytes:
    """Read what is there (up to 64 KiB), appending the descriptors that come
    with it to ``fds`` (socket.recv_fds, but it ignores flags before 3.12)."""
    data, ancdata, _flags, _addr = control.recvmsg(65536, socket.CMSG_LEN(64 * 4), flags)
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(struct.unpack("%di" % (len(payload) // 4), payload[: len(payload) // 4 * 4]))
    return data


def _fork_batch(control: socket.socket, batch: "List[Any]", shed: "List[int]") -> None:
    """Fork a worker for each ``(request, config, streams)`` of ``batch``,
    back to back, then close the streams and send the replies at once.

    After a fork every page of this process is shared with the child, and
    the first write to one copies it: what runs between two forks decides
    how many pages each fork costs here. Decoding, replies and closes done
    once for the batch cost far fewer copies than done between the forks.
    A child closes the other requests' streams and the descriptors in
    ``shed``, as well as the control socket."""
    outcomes: "List[Any]" = []
    for _request, config, streams in batch:
        if len(streams) != FDS_PER_REQUEST:
            outcomes.append("request without its three streams")
            continue
        try:
            pid = os.fork()
        except OSError as exc:
            outcomes.append(str(exc))
            continue
        if pid == 0:
            others = [fd for entry in batch if entry[2] is not streams for fd in entry[2]]
            _become_worker([control, *shed, *others], config, streams)
        outcomes.append(pid)
    replies = []
    for index, (request, _config, streams) in enumerate(batch):
        outcome = outcomes[index]
        for fd in streams:
            os.close(fd)
        if isinstance(outcome, int):
            replies.append(encode_frame(DATA, request, dumps(outcome)))
        else:
            replies.append(encode_frame(CLOSE_ERROR, request, outcome.encode("utf-8", "replace")))
    control.sendall(b"".join(replies))


def _become_worker(shed: "List[Any]", config: "dict[str, Any]", streams: "List[int]") -> None:
    """In the child: shed the fork server's state (``shed``: its sockets and
    descriptors), take the three streams as fds 0-2 in a session of its own
    (as popen's children have), run a worker."""
    status = 1
    try:
        # _signal: signal's wrapper would convert to and from enums (pages
        # of enum code and objects written, each one copied).
        _signal.set_wakeup_fd(-1)
        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
        for item in shed:
            if isinstance(item, int):
                os.close(item)
            else:
                item.close()
        os.setsid()
        for target, fd in enumerate(streams):
            os.dup2(fd, target)
            os.close(fd)
        _worker.serve(config)  # prepared before the fork (_prepare)
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


class _Listener:
    """A fork server for ssh gateways, listening on a Unix socket in a
    private directory (see the module doc)."""

    def __init__(self, config: "dict[str, Any]") -> None:
        self.control_in = os.dup(0)
        self.control_out = os.dup(1)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)  # nothing may write into the control stream by accident
        os.close(devnull)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, _ignore)
        _preload(config.get("preload") or [])
        _prepare()
        self.directory = _private_directory()
        _sweep(os.path.dirname(self.directory))
        self.path = os.path.join(self.directory, "forkserver")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.listener.bind(self.path)
            self.listener.listen(64)
        except BaseException:
            self._remove()
            raise
        self.listener.setblocking(False)
        #: Accepted connections whose request is still being read: fd -> [socket, bytes].
        self.pending: "dict[int, List[Any]]" = {}
        #: Forked workers not yet reaped: only those may be killed on request.
        self.children: "set[int]" = set()
        self.poller = select.poll()
        for fd in (self.control_in, self.listener.fileno(), self.wake_r):
            self.poller.register(fd, select.POLLIN)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.control_out, view) :]

    def serve(self) -> None:
        status = 0
        try:
            hello = {"pid": os.getpid(), "forkserver": True, "socket": self.path}
            self.send(MAGIC + encode_frame(HELLO, 0, dumps(hello)))
            decoder = FrameDecoder()
            while True:
                for fd, _events in self.poller.poll():
                    if fd == self.wake_r:
                        os.read(self.wake_r, 4096)
                        self.children.difference_update(_reap(self.send))
                    elif fd == self.control_in:
                        data = os.read(self.control_in, 65536)
                        if not data:
                            return  # the connection is closing
                        for _msgtype, _ident, payload in decoder.feed(data):
                            self._command(loads(payload))
                    elif fd == self.listener.fileno():
                        self._accept()
                    elif fd in self.pending:
                        self._read_request(fd)
        except BaseException:
            status = 1
            import traceback

            traceback.print_exc()
        finally:
            self._remove()
            os._exit(status)

    def _remove(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass
        try:
            os.rmdir(self.directory)
        except OSError:
            pass

    def _command(self, command: "List[Any]") -> None:
        if command[0] == "kill" and command[1] in self.children:
            try:
                os.killpg(command[1], signal.SIGKILL)  # its own session: its group
            except OSError:
                pass

    def _accept(self) -> None:
        try:
            conn, _addr = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if not _same_user(conn):
            conn.close()
            return
        conn.setblocking(False)
        self.pending[conn.fileno()] = [conn, b""]
        self.poller.register(conn.fileno(), select.POLLIN)

    def _drop(self, fd: int) -> None:
        conn = self.pending.pop(fd)[0]
        self.poller.unregister(fd)
        conn.close()

    def _read_request(self, fd: int) -> None:
        """Read the request frame and not a byte more: what follows is the worker's."""
        entry = self.pending[fd]
        conn, received = entry
        need = HEADER_SIZE - len(received)
        if need <= 0:
            need += HEADER.unpack_from(received)[2]
        try:
            chunk = conn.recv(need)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(fd)
            return
        received = entry[1] = received + chunk
        if len(received) < HEADER_SIZE:
            return
        msgtype, request, length = HEADER.unpack_from(received)
        if msgtype != DATA or length > MAX_REQUEST:
            self._drop(fd)
            return
        if len(received) < HEADER_SIZE + length:
            return
        try:
            config = loads(received[HEADER_SIZE:])
        except Exception:
            config = None
        if not isinstance(config, dict):
            self._drop(fd)
            return
        conn.setblocking(True)  # the worker reads and writes it blocking (dups share this)
        streams = [os.dup(fd), os.dup(fd), os.dup(2)]
        self._drop(fd)
        shed = [
            self.listener,
            self.control_in,
            self.control_out,
            self.wake_r,
            self.wake_w,
            *[entry[0] for entry in self.pending.values()],
        ]
        try:
            pid = os.fork()
        except OSError as exc:
            for stream in streams:
                os.close(stream)
            self.send(encode_frame(CLOSE_ERROR, request, str(exc).encode("utf-8", "replace")))
            return
        if pid == 0:
            _become_worker(shed, config, streams)
        for stream in streams:
            os.close(stream)
        self.children.add(pid)
        self.send(encode_frame(DATA, request, dumps(pid)))


def _private_directory() -> str:
    """A fresh directory only this user can enter (0700, ours, not a link),
    in the temp directory ($TMPDIR if its socket paths fit, else /tmp)."""
    bases = [os.environ.get("TMPDIR") or "", "/tmp"]
    for base in bases:
        if not base or len(base) > MAX_SOCKET_PATH - 40:
            continue
        for _attempt in range(10):
            path = os.path.join(base, "asyncgw-" + os.urandom(8).hex())
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                continue
            except OSError:
                break
            os.chmod(path, 0o700)  # mkdir's mode is masked by the umask; never widened
            info = os.lstat(path)
            if info.st_uid != os.getuid() or (info.st_mode & 0o7777) != 0o700:
                os.rmdir(path)
                break
            return path
    raise OSError("no private directory for the fork server's socket")


def _sweep(base: str) -> None:
    """Remove the directories of fork servers of this user that were killed
    (they could not remove their own): a private directory of ours, named
    as ours are, older than :data:`STALE_AFTER` seconds, whose socket
    refuses connections. Anything else is left alone."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    now = time.time()
    for name in names:
        if not (name.startswith("asyncgw-") and len(name) == 24):
            continue
        path = os.path.join(base, name)
        try:
            info = os.lstat(path)
            if (
                not stat.S_ISDIR(info.st_mode)
                or info.st_uid != os.getuid()
                or stat.S_IMODE(info.st_mode) != 0o700
                or now - info.st_mtime < STALE_AFTER
                or os.listdir(path) != ["forkserver"]
            ):
                continue
            socket_path = os.path.join(path, "forkserver")
            if not stat.S_ISSOCK(os.lstat(socket_path).st_mode):
                continue
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(socket_path)
            except ConnectionRefusedError:
                os.unlink(socket_path)
                os.rmdir(path)
            finally:
                probe.close()
        except OSError:
            continue


def _same_user(conn: socket.socket) -> bool:
    """Whether the peer of ``conn`` runs as this user (or root), where the
    system tells (Linux: SO_PEERCRED); the directory's mode keeps others out
    anyway."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return True
    try:
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, option, 12))
    except OSError:
        return False
    return uid in (os.getuid(), 0)
