"""Checking the entries of a copied tree before anything is written.

Every writer of files that came over a channel — the local receivers of
``Get`` (:mod:`asyncgw.files.putget`) and the far-side receivers of ``Put``
(:mod:`asyncgw.remote.files`) and ``RSync`` (:mod:`asyncgw.remote.rsync`) —
turns an entry's name into a path with :func:`entry_path` and nothing
else, so the whole class of hostile or malformed names is refused in one
place, whichever side sent it.

Invariants: a path from :func:`entry_path` is ``destination`` joined with
one or more plain names (no ``..``, ``.``, empty name, separator or NUL), and
no directory between ``destination`` and the entry is a symlink at the
time of the check (a symlink planted by an earlier entry cannot redirect a
later one). The entry itself may be a symlink: writers replace it (write
beside, rename over), never write through it. ``destination`` itself is
the caller's choice and may be a symlink.

Shipped as source ahead of the far-side modules that use it (see
:func:`shipped_with`): stdlib only, Python 3.9 syntax, no ``__future__``
import and no ``__channelexec__`` block of its own.
"""

import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, List


class UnsafeEntry(ValueError):
    """An entry name that would lead outside the destination, or that no
    honest sender produces; the message names the entry."""


def entry_names(rel: "Any") -> "List[str]":
    """The names in ``rel``, a ``/``-separated relative entry name.

    :raises UnsafeEntry: for anything but a non-empty string of plain names.
    """
    if not isinstance(rel, str):
        raise UnsafeEntry("refused entry %r: its name is not a string" % (rel,))
    if not rel:
        raise UnsafeEntry("refused entry %r: empty name" % (rel,))
    if "\x00" in rel:
        raise UnsafeEntry("refused entry %r: NUL in its name" % (rel,))
    if rel.startswith("/") or os.path.isabs(rel):
        raise UnsafeEntry("refused entry %r: absolute name" % (rel,))
    names = rel.split("/")
    for name in names:
        if name in ("", ".", ".."):
            raise UnsafeEntry("refused entry %r: %r in its name" % (rel, name))
        if os.sep in name or (os.altsep and os.altsep in name):
            raise UnsafeEntry("refused entry %r: a separator in %r" % (rel, name))
    return names


def entry_path(destination: str, names: "List[str]", rel: str = "") -> str:
    """The path of the entry ``names`` (from :func:`entry_names`) under
    ``destination``, once no directory between them is a symlink or a
    non-directory; ``rel`` is the entry's name, for the message.

    :raises UnsafeEntry: if a directory on the way is a symlink.
    """
    path = destination
    for name in names[:-1]:
        path = os.path.join(path, name)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue  # made later by a directory entry, itself checked then
        if stat.S_ISLNK(mode):
            raise UnsafeEntry(
                "refused entry %r: %s is a symlink, which could lead outside %s"
                % (rel or "/".join(names), path, destination)
            )
    return os.path.join(path, names[-1]) if names else destination


def checked_mode(mode: "Any", rel: "Any", set_id: bool = True) -> int:
    """A permission mode from a sender: an int; without the set-user and
    set-group ID bits unless ``set_id`` (a copy from another host into
    this one never grants those; a copy the user sends keeps them).

    :raises UnsafeEntry: for anything but an int in 0..0o7777.
    """
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise UnsafeEntry("refused entry %r: bad mode %r" % (rel, mode))
    return mode if set_id else mode & ~(stat.S_ISUID | stat.S_ISGID)


def checked_number(value: "Any", rel: "Any", what: str, integral: bool = True) -> "Any":
    """A size or time from a sender: a non-negative int (or, with
    ``integral`` false, a finite float too).

    :raises UnsafeEntry: naming ``what`` otherwise.
    """
    kinds = (int,) if integral else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or not 0 <= value < 2**63
        or value != value  # NaN
    ):
        raise UnsafeEntry("refused entry %r: bad %s %r" % (rel, what, value))
    return value


def shipped_with(module: "ModuleType") -> str:
    """The source to ``remote_exec`` for far-side ``module``: this module's
    source, then ``module``'s (its ``from __future__`` line, if any, moved
    to the very top, where Python requires it). Local side only."""
    import inspect
    import sys

    future = "from __future__ import annotations\n"
    own = inspect.getsource(module)
    head = future if future in own else ""
    return head + inspect.getsource(sys.modules[__name__]) + own.replace(future, "")
