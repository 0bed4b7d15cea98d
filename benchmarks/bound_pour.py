"""What pouring 1 MiB chunks through a pipe costs a Python reader, by how it
holds what it reads. Usage: ``python benchmarks/bound_pour.py``.

The writer (this process) ``os.write``s 512 MiB in 1 MiB chunks into a
1 MiB pipe; the reader, a fresh interpreter, reads until EOF:

- ``reused buffer``: ``os.readv`` into one preallocated buffer (the raw
  bound of ``bench_core.py``'s 1 MiB row; nothing is kept);
- ``new bytes per read``: ``os.read(fd, 1 MiB)``, a new object per read,
  of whatever size the pipe had ready;
- ``one object per message``: each 1 MiB message assembled into a new
  buffer of its size and handed out as ``bytes`` — what a message API that
  returns each chunk as a value must do at the least.

Two rounds, each printed; MiB/s.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time

MIB = 1 << 20
CHUNKS = 512
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

READERS = {
    "reused buffer": """
import os
buffer, total = bytearray(1 << 20), 0
while count := os.readv(0, [buffer]):
    total += count
os.write(1, str(total).encode())
""",
    "new bytes per read": """
import os
total = 0
while data := os.read(0, 1 << 20):
    total += len(data)
os.write(1, str(total).encode())
""",
    "one object per message": """
import os
total = 0
while True:
    buffer = bytearray(1 << 20)
    view, got = memoryview(buffer), 0
    while got < len(buffer) and (count := os.readv(0, [view[got:]])):
        got += count
    if not got:
        break
    message = bytes(buffer)
    total += got
os.write(1, str(total).encode())
""",
}


def pour(reader: str) -> float:
    child = subprocess.Popen(
        [sys.executable, "-c", reader], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    fcntl.fcntl(child.stdin.fileno(), F_SETPIPE_SZ, MIB)
    chunk = bytes(MIB)
    started = time.perf_counter()
    for _ in range(CHUNKS):
        view = memoryview(chunk)
        while view:
            view = view[os.write(child.stdin.fileno(), view) :]
    child.stdin.close()
    total = int(child.stdout.read())
    elapsed = time.perf_counter() - started
    child.wait()
    if total != CHUNKS * MIB:
        raise AssertionError(f"{total} bytes arrived, not {CHUNKS * MIB}")
    return CHUNKS / elapsed


def main() -> None:
    for _ in range(2):
        for name, reader in READERS.items():
            print(f"{name:24} {pour(reader):7.0f} MiB/s")


if __name__ == "__main__":
    main()
