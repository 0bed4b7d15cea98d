"""``asyncgw map HOSTS module:function ARGS-FILE``: a parallel map from the shell.

Each line of ARGS-FILE (``-``: standard input) is one JSON value, the
argument of one call; ``function(value)`` runs on the hosts' interpreters
through :class:`asyncgw.Pool`, and each result is printed on standard
output as one line of JSON, in the order of the lines. The function is
imported here (the current directory first on ``sys.path``) and travels
as source, as the pool ships every function: it must be self-contained
(its imports inside its body).

A call that fails prints ``null`` in its place (so that the output keeps
one line per value, blank input lines being skipped) and, on standard
error, its line number and its error by name; a result JSON cannot carry (bytes, a set, an array)
fails its own line the same way. Exit status: 0 when every line
succeeded, 1 when any failed, 255 when the hosts could not be reached,
2 for bad usage (a bad line of ARGS-FILE included: nothing runs), 130
after Ctrl-C (the workers are stopped first).

HOSTS is parsed as the other commands parse it (:mod:`.targets`);
``--workers N`` starts N interpreters per place (``localhost`` counts as
one place however often it is named).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from .args import UsageError, _add_common, _Parser
from .targets import Options, gateway_spec, parse_hosts

__all__ = ["build_parser", "main"]

USAGE = "asyncgw map [options] HOSTS MODULE:FUNCTION ARGS-FILE"

DESCRIPTION = """\
Call MODULE:FUNCTION once per line of ARGS-FILE (one JSON value a line, '-':
standard input) on the hosts' interpreters, at once, and print each result as
one line of JSON, in order. The function is imported here and sent as source:
keep its imports inside its body. A failed line prints null and, on standard
error, its line number and error; the exit status is then 1.

  asyncgw map -n 2 localhost mymod:work args.jsonl > results.jsonl
  seq 100 | asyncgw map 'node[1-8]' mymod:square -
"""


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``asyncgw map``'s arguments (the word ``map`` removed)."""
    parser = _Parser(
        prog="asyncgw map",
        usage=USAGE,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("hosts", metavar="HOSTS", help="node set: 'node[1-8],root@db1:2222'")
    parser.add_argument("function", metavar="MODULE:FUNCTION", help="e.g. mypkg.work:score")
    parser.add_argument("args_file", metavar="ARGS-FILE", help="one JSON value a line; '-': stdin")
    _add_common(parser, suppress=False)
    pool = parser.add_argument_group("map options")
    pool.add_argument(
        "-n", "--workers", type=_count, default=1, metavar="N",
        help="interpreters per place (default 1)",
    )  # fmt: skip
    pool.add_argument("--python", metavar="PATH", help="remote interpreter (default python3)")
    pool.add_argument(
        "--chunksize", type=_count, metavar="N", help="lines sent together (default: automatic)"
    )
    return parser


def load_function(name: str) -> Callable[..., Any]:
    """``module:function`` imported here, the current directory first.

    :raises UsageError: naming what could not be found.
    """
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"asyncgw map: {name!r} is not MODULE:FUNCTION")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise UsageError(f"asyncgw map: cannot import {module_name}: {exc!r}") from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(f"asyncgw map: {module_name} has no {attribute}") from None
    if not callable(target):
        raise UsageError(f"asyncgw map: {name} is not callable")
    return target  # type: ignore[no-any-return]


def read_items(path: str) -> list[Any]:
    """The JSON values of ``path``, one a line (blank lines are skipped).

    :raises UsageError: naming the line that is not JSON, before anything runs.
    """
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as file:
                text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"asyncgw map: cannot read {path}: {exc}") from None
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append((number, json.loads(line)))
        except ValueError as exc:
            raise UsageError(f"asyncgw map: {path}:{number}: not JSON: {exc}") from None
    return items


def _specs(namespace: argparse.Namespace) -> list[str]:
    try:
        targets = parse_hosts(namespace.hosts)
    except ValueError as exc:
        raise UsageError(f"asyncgw map: bad HOSTS: {exc}") from None
    if namespace.identity is not None and any(target.host for target in targets):
        # A key that cannot be used is the caller's mistake, as in the other commands.
        from ..transports.sshpool import _load_identity

        try:
            _load_identity(os.path.expanduser(namespace.identity))
        except ValueError as exc:
            raise UsageError(f"asyncgw map: -i {namespace.identity}: {exc}") from None
    options = Options(
        user=namespace.user,
        identity=namespace.identity,
        port=namespace.port,
        known_hosts=namespace.known_hosts,
        jump=namespace.jump,
        connect_timeout=namespace.connect_timeout,
    )
    return [
        gateway_spec(target, options, f"{target.label}#{n}", namespace.python)
        for target in targets
        for n in range(1, namespace.workers + 1)
    ]


def _describe(exc: BaseException) -> str:
    from .._errors import RemoteError

    if isinstance(exc, RemoteError):
        last = str(exc).strip().splitlines()
        return last[-1] if last else type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


async def _run(
    function: Callable[..., Any], items: list[Any], specs: list[str], namespace: Any
) -> int:
    import asyncgw

    progress = sys.stderr.isatty() and not namespace.no_progress and not namespace.quiet
    if progress:
        try:
            import rich  # noqa: F401
        except ImportError:
            progress = False  # the bar is an extra; the map is not
    try:
        pool = asyncgw.Pool(specs, timeout=namespace.timeout, chunksize=namespace.chunksize)
        await pool.start()
    except Exception as exc:
        sys.stderr.write(f"asyncgw map: cannot start the workers: {_describe(exc)}\n")
        return 255
    try:
        results = await pool.map(
            function, [value for _, value in items], return_exceptions=True, progress=progress
        )
    finally:
        await pool.close()
    failed = 0
    out = sys.stdout
    for (number, _), result in zip(items, results, strict=True):
        if isinstance(result, BaseException):
            line, error = "null", _describe(result)
        else:
            try:
                line, error = json.dumps(result), ""
            except (TypeError, ValueError) as exc:
                line, error = "null", f"the result is not JSON: {exc}"
        if error:
            failed += 1
            sys.stderr.write(f"asyncgw map: line {number}: {error}\n")
        out.write(line + "\n")
    out.flush()
    if failed:
        sys.stderr.write(f"asyncgw map: {failed} of {len(items)} lines failed\n")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    """Run ``asyncgw map`` with ``argv`` (the words after ``asyncgw``, the
    word ``map`` removed); return its exit status.

    :raises UsageError: for a bad command line or ARGS-FILE (nothing ran).
    """
    namespace = build_parser().parse_args(argv)
    specs = _specs(namespace)
    function = load_function(namespace.function)
    items = read_items(namespace.args_file)
    try:
        return asyncio.run(_run(function, items, specs, namespace))
    except KeyboardInterrupt:  # asyncio.run cancelled the map: the pool closed
        return 128 + signal.SIGINT
