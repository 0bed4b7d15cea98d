"""Node sets: ``node[1-16,20]`` unfolded into host names, and host names folded back.

The syntax is ClusterShell's and pdsh's:

- ``node[1-3,7]``: a bracket group of numbers and ranges (node1 node2 node3 node7). A range
  keeps the width of its lower bound (``n[08-10]``: n08 n09 n10; ``n[8-10]``: n8 n9 n10) and
  may have a step (``n[1-9/4]``: n1 n5 n9).
- ``r[1-2]n[1-2]``: several groups form a cartesian product, left to right (r1n1 r1n2 r2n1 r2n2).
- ``a, b[1-2]``: a comma outside brackets separates patterns; spaces around them are ignored.
- ``@path``: a file (relative to the current directory) of patterns, one a line; blank lines
  and ``#`` comments are skipped. Files are read with bounds: at most
  :data:`MAX_FILE_BYTES` in all for one pattern (``@/dev/zero`` is an error, not an endless
  read), and files including files at most :data:`MAX_FILE_DEPTH` deep.

A bracket group is a range only if it is made of letters, digits, ``,``, ``-`` and ``/``
(and then it must be a valid one: ``[a-c]`` is an error); any other group, such as ``[::1]``,
is literal text, so IPv6 addresses, ``user@`` and ``:port`` pass through untouched.

:func:`expand` keeps the first occurrence of each host, in order, and never returns more
than :data:`MAX_HOSTS` of them. :func:`fold` is its inverse for display:
``set(expand(fold(hosts))) == set(hosts)``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MAX_FILE_BYTES", "MAX_FILE_DEPTH", "MAX_HOSTS", "expand", "fold"]

#: Most hosts one :func:`expand` returns: a typo such as ``n[1-999999999]`` fails at once
#: instead of filling the memory.
MAX_HOSTS = 1_000_000
#: Most bytes the ``@files`` of one :func:`expand` may hold, in all (a file included
#: twice counts twice): room for :data:`MAX_HOSTS` long names.
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Most ``@files`` within ``@files`` (a chain of inclusions).
MAX_FILE_DEPTH = 16

# A group made only of these characters is meant as a range; anything else (the colons of
# ``[::1]``, the ``%`` of ``[fe80::1%eth0]``) makes it literal text.
_RANGE_LIKE = re.compile(r"[\w\s,/-]*")
_RANGE = re.compile(r"(\d+)\s*(?:-\s*(\d+))?\s*(?:/\s*(\d+))?")
_GROUP = re.compile(r"\[([^\[\]]*)\]")
_BALANCED = re.compile(r"[^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*")
# Once brackets are known to pair, an item is a run of bracket groups and non-commas.
_ITEM = re.compile(r"(?:[^,\[]|\[[^\]]*\])+")
# Lazy prefix: the digits matched are the whole of the last run.
_LAST_DIGITS = re.compile(r"(.*?)(\d+)(\D*)", re.DOTALL)
_PORT = re.compile(r":\d+\Z")

#: One element of a bracket group: its numbers and the width of its lower bound.
_Range = tuple[range, int]


def expand(pattern: str) -> list[str]:
    """Return the hosts a node-set pattern names, first occurrences in order.

    :param pattern: for example ``"root@node[1-16,20]:2222, login1, @extra_hosts"``
    :raises ValueError: naming the pattern and the fault: unbalanced or nested brackets, an
        empty group, a reversed or non-numeric range, a step of 0, an ``@file`` that cannot be
        read, or more than :data:`MAX_HOSTS` hosts.
    """
    hosts: dict[str, None] = {}  # a dict, not a set: it keeps the order
    _expand_into(pattern, hosts, (), [MAX_FILE_BYTES])
    return list(hosts)


def _expand_into(
    pattern: str, hosts: dict[str, None], files: tuple[Path, ...], room: list[int]
) -> None:
    """Add the hosts of ``pattern``; ``files`` are the ``@files`` being read (outermost
    first), ``room`` (one number, shared) the bytes files may still hold."""
    for item in _split_top(pattern):
        if item.startswith("@"):
            _expand_file(item, hosts, files, room)
        else:
            _expand_item(item, hosts)


def _error(pattern: str, what: str) -> ValueError:
    return ValueError(f"node set {pattern!r}: {what}")


def _split_top(pattern: str) -> list[str]:
    """Split at the commas outside brackets, once brackets are known to pair and not nest."""
    if not _BALANCED.fullmatch(pattern):
        raise _error(pattern, "unbalanced or nested brackets")
    return [item.strip() for item in _ITEM.findall(pattern) if item.strip()]


def _expand_item(item: str, hosts: dict[str, None]) -> None:
    # _GROUP.split alternates literal text and group contents: "a[1-2]b" -> "a", "1-2", "b".
    axes: list[str | list[_Range]] = []
    count = 1
    for index, part in enumerate(_GROUP.split(item)):
        ranges = _parse_group(part, item) if index % 2 else None
        if ranges is None:
            axes.append(f"[{part}]" if index % 2 else part)
        else:
            axes.append(ranges)
            # Not len(): it overflows on ranges beyond sys.maxsize, such as a typo's.
            count *= sum((ns[-1] - ns[0]) // ns.step + 1 for ns, _ in ranges)
    # Counted before any name is made, so the guard costs nothing however big the set.
    if len(hosts) + count > MAX_HOSTS:
        total = f", {len(hosts) + count:,} in all" if hosts else ""
        raise _error(
            item, f"expands to {count:,} hosts{total}; a node set holds at most {MAX_HOSTS:,}"
        )
    choices = [
        [axis] if isinstance(axis, str) else [str(n).zfill(w) for ns, w in axis for n in ns]
        for axis in axes
    ]
    hosts.update(dict.fromkeys("".join(parts) for parts in itertools.product(*choices)))


def _parse_group(content: str, item: str) -> list[_Range] | None:
    """The ranges of a bracket group, or None if the group is literal text."""
    if not _RANGE_LIKE.fullmatch(content):
        return None
    if not content.strip():
        raise _error(item, "empty brackets []")
    ranges: list[_Range] = []
    for element in (part.strip() for part in content.split(",")):
        match = _RANGE.fullmatch(element)
        if match is None:
            what = "non-numeric range" if re.search(r"[^\d/-]", element) else "bad range"
            raise _error(item, f"{what} {element!r} in [{content}] (use 1-5, 01-10, 1-9/2)")
        low, high, step = match.groups()
        if int(high or low) < int(low):
            raise _error(item, f"reversed range {element!r}")
        if step is not None and int(step) == 0:
            raise _error(item, f"step 0 in {element!r}")
        ranges.append((range(int(low), int(high or low) + 1, int(step or 1)), len(low)))
    return ranges


def _expand_file(
    item: str, hosts: dict[str, None], files: tuple[Path, ...], room: list[int]
) -> None:
    name = item[1:].strip()
    if not name:
        raise _error(item, "no file name after '@'")
    if len(files) >= MAX_FILE_DEPTH:
        raise _error(item, f"files include files more than {MAX_FILE_DEPTH} deep")
    path = Path(name)
    try:
        # One byte more than the room left tells a file too big from one that fits: a
        # device or a pipe that never ends is read no further.
        with path.open("rb") as file:
            data = file.read(room[0] + 1)
        if len(data) > room[0]:
            raise _error(
                item,
                f"file {name!r} is too big: the files of one node set hold at most"
                f" {MAX_FILE_BYTES:,} bytes in all",
            )
        room[0] -= len(data)
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise _error(item, f"file {name!r} does not exist") from None
    except (OSError, UnicodeError) as exc:
        raise _error(item, f"cannot read file {name!r}: {exc}") from exc
    resolved = path.resolve()
    if resolved in files:  # a file that names itself would recurse forever
        raise _error(item, f"file {name!r} includes itself")
    for lineno, line in enumerate(text.splitlines(), 1):
        try:
            _expand_into(line.partition("#")[0], hosts, (*files, resolved), room)
        except ValueError as exc:
            raise ValueError(f"{name}:{lineno}: {exc}") from None


def fold(hosts: Iterable[str]) -> str:
    """Return a short node set naming the same hosts, as ClusterShell's ``nodeset -f``.

    Hosts that differ only in their last run of digits become ``prefix[ranges]suffix`` (a
    trailing ``:port`` is left in the suffix, so ``n1:22,n2:22`` folds to ``n[1-2]:22``).
    Zero-padded numbers are grouped by width, as ``n01`` is not ``n1``. Groups are sorted by
    prefix and suffix, numbers ascending; a group of one host is written plainly.

    :param hosts: host names, in any order, duplicates allowed
    :raises ValueError: for a name :func:`expand` would not return as itself, such as ``""``,
        ``"a,b"``, ``"@file"`` or ``"n[1-2]"``.
    """
    groups: dict[tuple[str, str, int], set[int]] = {}
    plain: set[str] = set()
    for host in hosts:
        _check_host(host)
        split = _split_host(host)
        if split is None:
            plain.add(host)
            continue
        prefix, digits, suffix = split
        width = len(digits) if digits.startswith("0") and len(digits) > 1 else 0
        groups.setdefault((prefix, suffix, width), set()).add(int(digits))
    # n10 reads the same padded to 2 digits or not: it joins n[01-09] if there is one, so
    # that n[01-12] folds back to itself.
    for (prefix, suffix, width), numbers in list(groups.items()):
        if width == 0:
            moving = {number for number in numbers if (prefix, suffix, len(str(number))) in groups}
            for number in moving:
                groups[prefix, suffix, len(str(number))].add(number)
            numbers -= moving
            if not numbers:
                del groups[prefix, suffix, 0]
    # Plain hosts sort by name among the groups; width -1 keeps every key distinct.
    entries = [((host, "", -1), host) for host in plain]
    entries += [(key, _write(*key, sorted(numbers))) for key, numbers in groups.items()]
    return ",".join(text for _, text in sorted(entries))


def _check_host(host: str) -> None:
    # Checked before expand(), which would split at the comma or read the file.
    bad = not host or host != host.strip() or host.startswith("@") or "," in host
    try:
        bad = bad or (("[" in host or "]" in host) and expand(host) != [host])
    except ValueError:
        bad = True
    if bad:
        raise ValueError(f"cannot fold {host!r}: not a single host name")


def _split_host(host: str) -> tuple[str, str, str] | None:
    """``(prefix, digits, suffix)`` around the digits to fold on, or None if there are none."""
    candidates = [host]
    port = _PORT.search(host)
    if port:
        before = host[: port.start()]
        if ":" not in before or before.endswith("]"):  # not the tail of a bare IPv6 address
            candidates.insert(0, before)
    for candidate in candidates:  # the name's digits first, else the port's
        match = _LAST_DIGITS.fullmatch(candidate)
        # Digits inside brackets (``[::1]``) cannot take a range group.
        if match and match[1].count("[") == match[1].count("]"):
            return match[1], match[2], match[3] + host[len(candidate) :]
    return None


def _write(prefix: str, suffix: str, width: int, numbers: list[int]) -> str:
    def pad(number: int) -> str:
        return str(number).zfill(width)

    if len(numbers) == 1:
        return f"{prefix}{pad(numbers[0])}{suffix}"
    runs: list[list[int]] = []  # [first, last] of each run of consecutive numbers
    for number in numbers:
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    text = ",".join(
        pad(first) if first == last else f"{pad(first)}-{pad(last)}" for first, last in runs
    )
    return f"{prefix}[{text}]{suffix}"
