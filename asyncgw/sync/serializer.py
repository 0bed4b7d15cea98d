"""execnet's value functions in :mod:`asyncgw.sync`: :func:`dumps` and
:func:`loads` (the wire codec, :mod:`asyncgw._wire`), and :func:`dump` and
:func:`load` for files holding a sequence of values, each one a 4-byte
big-endian length followed by its encoding.
"""

from __future__ import annotations

import struct
from typing import IO, Any

from .. import _wire
from .._errors import LoadError

__all__ = ["dump", "dumps", "load", "loads"]

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
