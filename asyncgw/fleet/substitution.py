"""execo's substitutions in commands and paths.

- ``{{{host}}}`` becomes the address of the host the string is for;
- ``{{expression}}`` becomes ``value[index % len(value)]``, where
  ``value`` is the expression evaluated in the frame that created the
  action (its globals and locals, at construction) and ``index`` the
  host's position in the action's host list.

So ``Remote('iperf -c {{[h.address for h in hosts2]}}', hosts1)`` pairs
the hosts of ``hosts1`` with those of ``hosts2`` in turn.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["Substitution", "caller_namespace", "remote_substitute"]

_HOST = "{{{host}}}"
_EXPRESSION = re.compile(r"\{\{(.+?)\}\}(?!\})")

#: (globals, locals) of a frame.
Namespace = tuple[dict[str, Any], dict[str, Any]]


def caller_namespace(depth: int) -> Namespace:
    """The globals and locals of the frame ``depth`` levels above the caller."""
    frame = sys._getframe(depth + 1)
    try:
        return frame.f_globals, dict(frame.f_locals)
    finally:
        del frame


class Substitution:
    """The expressions of some strings, evaluated once, in one namespace."""

    def __init__(self, strings: Sequence[str], namespace: Namespace) -> None:
        self._values: dict[str, Sequence[Any]] = {}
        for string in strings:
            for match in _EXPRESSION.finditer(string.replace(_HOST, "")):
                expression = match.group(1)
                if expression in self._values:
                    continue
                try:
                    value = eval(expression, namespace[0], namespace[1])
                except Exception as exc:
                    raise ValueError(
                        f"cannot evaluate {{{{{expression}}}}} in {string!r}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from None
                if not isinstance(value, Sequence) or isinstance(value, str) or not value:
                    raise ValueError(
                        f"{{{{{expression}}}}} in {string!r} must give a non-empty sequence, "
                        f"not {value!r}"
                    )
                self._values[expression] = value

    def apply(self, string: str, address: str, index: int) -> str:
        """``string`` for the host at ``address``, position ``index``."""
        pieces = string.split(_HOST)

        def value(match: re.Match[str]) -> str:
            sequence = self._values[match.group(1)]
            return str(sequence[index % len(sequence)])

        return address.join(_EXPRESSION.sub(value, piece) for piece in pieces)


def remote_substitute(
    string: str, all_hosts: Sequence[Any], index: int, frame_context: Namespace
) -> str:
    """execo's function: ``string`` substituted for ``all_hosts[index]``,
    expressions evaluated in ``frame_context`` (globals, locals)."""
    host = all_hosts[index]
    address = getattr(host, "address", None) or str(host)
    return Substitution([string], frame_context).apply(string, address, index)
