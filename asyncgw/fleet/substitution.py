"""execo's substitutions in commands and paths.

- ``{{{host}}}`` becomes the address of the host the string is for;
- ``{{expression}}`` becomes ``value[index % len(value)]``, where
  ``value`` is the expression evaluated in the frame that created the
  action (its globals and locals, at construction) and ``index`` the
  host's position in the action's host list. Unlike execo, the expression
  is not handed to ``eval``: names, attributes, subscripts, literals,
  arithmetic, comprehensions, ``range(...)`` and ``len(...)`` are
  allowed; other calls and private names are not (see :func:`evaluate`),
  since a command may carry text from elsewhere.

So ``Remote('iperf -c {{[h.address for h in hosts2]}}', hosts1)`` pairs
the hosts of ``hosts1`` with those of ``hosts2`` in turn.

Invariant: whatever the text, finding and evaluating its expressions is
bounded in time and memory. The scan for ``{{...}}`` is linear in the
string; an expression is at most :data:`MAX_EXPRESSION` characters; its
evaluation takes at most :data:`MAX_STEPS` steps (a node evaluated, an
item iterated) and makes values of at most :data:`MAX_SIZE` items,
characters or bytes in all, each checked *before* the value is made; an
integer is at most :data:`MAX_INT_BITS` bits. Past a bound, the action's
constructor raises ``ValueError`` saying which. (What attributes and
``len`` do on the caller's own objects is the caller's code.)
"""

from __future__ import annotations

import ast
import operator
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

__all__ = [
    "MAX_EXPRESSION",
    "MAX_INT_BITS",
    "MAX_SIZE",
    "MAX_STEPS",
    "Substitution",
    "caller_namespace",
    "evaluate",
    "remote_substitute",
]

#: The longest ``{{expression}}``, in characters.
MAX_EXPRESSION = 2000
#: Steps (a node evaluated, an item iterated) one expression may take.
MAX_STEPS = 1_000_000
#: Items, characters or bytes one expression may make, in all.
MAX_SIZE = 4_000_000
#: The largest integer an expression may make, in bits.
MAX_INT_BITS = 8192

_HOST = "{{{host}}}"


def _expressions(string: str) -> Iterator[tuple[int, int, str]]:
    """``(start, end, expression)`` of each ``{{expression}}`` in
    ``string``, left to right: the shortest non-empty text on one line
    between ``{{`` and a ``}}`` not followed by another ``}`` (what the
    pattern ``\\{\\{(.+?)\\}\\}(?!\\})`` finds), in time linear in the string
    where that pattern takes quadratic time on many ``{{``.

    :raises ValueError: for an expression over :data:`MAX_EXPRESSION`.
    """
    close = newline = -1  # the last answers, valid while the scan is behind them
    position = 0
    while True:
        start = string.find("{{", position)
        if start < 0:
            return
        first = start + 3  # the expression has at least one character
        if close < first:
            close = string.find("}}", first)
            while close >= 0 and string.startswith("}", close + 2):
                close = string.find("}}", close + 1)
        if close < 0:
            return
        if newline < start + 2:
            newline = string.find("\n", start + 2)
            if newline < 0:
                newline = len(string)
        if newline < close:
            position = start + 1  # no match from here: as the pattern, move on by one
            continue
        expression = string[start + 2 : close]
        if len(expression) > MAX_EXPRESSION:
            raise ValueError(
                f"an expression in {{{{...}}}} is {len(expression)} characters long,"
                f" more than {MAX_EXPRESSION}"
            )
        yield start, close + 2, expression
        position = close + 2


def _substitute(string: str, value: Callable[[str], str]) -> str:
    """``string`` with each ``{{expression}}`` replaced by ``value(expression)``."""
    pieces = []
    position = 0
    for start, end, expression in _expressions(string):
        pieces += [string[position:start], value(expression)]
        position = end
    pieces.append(string[position:])
    return "".join(pieces)


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
            for _, _, expression in _expressions(string.replace(_HOST, "")):
                if expression in self._values:
                    continue
                try:
                    value = evaluate(expression, {**namespace[0], **namespace[1]})
                    empty = isinstance(value, Sequence) and not len(value)
                except Exception as exc:
                    raise ValueError(
                        f"cannot evaluate {{{{{_short(expression)}}}}} in {_short(string)!r}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from None
                if not isinstance(value, Sequence) or isinstance(value, str) or empty:
                    raise ValueError(
                        f"{{{{{expression}}}}} in {string!r} must give a non-empty sequence, "
                        f"not {value!r}"
                    )
                self._values[expression] = value

    def apply(self, string: str, address: str, index: int) -> str:
        """``string`` for the host at ``address``, position ``index``."""
        pieces = string.split(_HOST)

        def value(expression: str) -> str:
            sequence = self._values[expression]
            return str(sequence[index % len(sequence)])

        return address.join(_substitute(piece, value) for piece in pieces)


def _short(text: str, limit: int = 200) -> str:
    """``text``, cut for an error message."""
    return text if len(text) <= limit else text[:limit] + "..."


def evaluate(expression: str, names: dict[str, Any]) -> Any:
    """The value of ``expression``, a restricted Python expression: names,
    constants, public attributes, subscripts and slices, lists and tuples,
    arithmetic, comprehensions, ``range(...)`` and ``len(...)``. No other
    calls and no ``_names``: a command string may carry text that came from
    elsewhere (a host's output), and ``{{...}}`` in it must not be a way to
    run code here. Time and memory are bounded (see the module docstring).

    :raises ValueError: for anything outside that subset, or past a bound.
    """
    if len(expression) > MAX_EXPRESSION:
        raise ValueError(f"an expression of more than {MAX_EXPRESSION} characters")
    tree = ast.parse(expression.strip(), mode="eval")
    return _Evaluator(names).visit(tree.body)


def _size(value: Any) -> int:
    """What making ``value`` costs of :data:`MAX_SIZE`: its items, characters
    or bytes (a ``range`` is lazy: nothing)."""
    if isinstance(value, (str, bytes, bytearray, list, tuple, dict, set, frozenset)):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 64
    return 0


def _sequence(value: Any) -> bool:
    return isinstance(value, (str, bytes, bytearray, list, tuple))


#: What ``%`` formats into a string: scalars, alone or in a tuple.
_SCALARS = (str, bytes, int, float, type(None))
#: A ``%`` conversion's width and precision (``*`` is refused: unbounded).
_CONVERSION = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?")
_MAX_WIDTH = 1000


class _Evaluator(ast.NodeVisitor):
    _OPERATORS: ClassVar[dict[type[ast.AST], Any]] = {
        ast.Add: operator.add,
        ast.Sub: operator.sub,
        ast.Mult: operator.mul,
        ast.FloorDiv: operator.floordiv,
        ast.Mod: operator.mod,
        ast.USub: operator.neg,
    }

    #: Builtins that may be called (by their own name, not shadowed).
    _CALLABLE: ClassVar[dict[str, Callable[..., Any]]] = {"range": range, "len": len}

    def __init__(self, names: dict[str, Any]) -> None:
        self.names = names
        self.steps = MAX_STEPS
        self.size = MAX_SIZE

    def visit(self, node: ast.AST) -> Any:
        self.step()
        return super().visit(node)

    def step(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise ValueError(f"the expression takes more than {MAX_STEPS} steps")

    def spend(self, size: int) -> None:
        """Account for a value of ``size`` about to be made (before it is)."""
        self.size -= size
        if self.size < 0:
            raise ValueError(f"the expression makes more than {MAX_SIZE} items in all")

    def made(self, value: Any) -> Any:
        self.spend(_size(value))
        return value

    def generic_visit(self, node: ast.AST) -> Any:
        raise ValueError(f"{type(node).__name__} is not allowed in {{{{...}}}}")

    def visit_Constant(self, node: ast.Constant) -> Any:
        return node.value

    def visit_Name(self, node: ast.Name) -> Any:
        if node.id.startswith("_"):
            raise ValueError(f"private name {node.id!r}")
        if node.id not in self.names:
            raise NameError(f"name {node.id!r} is not defined")
        return self.names[node.id]

    def visit_Attribute(self, node: ast.Attribute) -> Any:
        if node.attr.startswith("_"):
            raise ValueError(f"private attribute {node.attr!r}")
        return getattr(self.visit(node.value), node.attr)

    def visit_Subscript(self, node: ast.Subscript) -> Any:
        value = self.visit(node.value)[self.visit(node.slice)]
        return self.made(value) if isinstance(node.slice, ast.Slice) else value

    def visit_Slice(self, node: ast.Slice) -> Any:
        parts = (node.lower, node.upper, node.step)
        return slice(*(None if part is None else self.visit(part) for part in parts))

    def visit_List(self, node: ast.List) -> Any:
        self.spend(len(node.elts))
        return [self.visit(element) for element in node.elts]

    def visit_Tuple(self, node: ast.Tuple) -> Any:
        self.spend(len(node.elts))
        return tuple(self.visit(element) for element in node.elts)

    def visit_Call(self, node: ast.Call) -> Any:
        function = node.func
        if (
            not isinstance(function, ast.Name)
            or function.id not in self._CALLABLE
            or function.id in self.names
            or node.keywords
            or any(isinstance(arg, ast.Starred) for arg in node.args)
        ):
            raise ValueError("calls are not allowed, but for range(...) and len(...)")
        return self._CALLABLE[function.id](*(self.visit(arg) for arg in node.args))

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        function = self._OPERATORS.get(type(node.op))
        if function is None:
            raise ValueError(f"operator {type(node.op).__name__} is not allowed")
        left, right = self.visit(node.left), self.visit(node.right)
        self._check(node.op, left, right)
        result = function(left, right)
        if isinstance(result, int) and result.bit_length() > MAX_INT_BITS:
            raise ValueError(f"the expression makes an integer of more than {MAX_INT_BITS} bits")
        return self.made(result)

    def _check(self, op: ast.operator, left: Any, right: Any) -> None:
        """Refuse, before it is made, a value over the bounds."""
        if isinstance(op, ast.Mult):
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
                    raise ValueError(
                        f"the expression makes an integer of more than {MAX_INT_BITS} bits"
                    )
            elif isinstance(right, int) and _sequence(left):
                self.spend(len(left) * max(right, 0))
            elif isinstance(left, int) and _sequence(right):
                self.spend(len(right) * max(left, 0))
        elif isinstance(op, ast.Add) and _sequence(left) and _sequence(right):
            self.spend(len(left) + len(right))
        elif isinstance(op, ast.Mod) and isinstance(left, (str, bytes)):
            self._check_format(left, right)

    def _check_format(self, template: str | bytes, args: Any) -> None:
        """``template % args`` only of scalars, at bounded widths."""
        values = args if isinstance(args, tuple) else (args,)
        if not all(isinstance(value, _SCALARS) for value in values):
            raise ValueError("'%' formats only strings and numbers (alone or in a tuple)")
        text = template if isinstance(template, str) else template.decode("latin-1")
        width = 0
        for match in _CONVERSION.finditer(text):
            for part in match.groups():
                if part == "*" or (part and len(part) > len(str(_MAX_WIDTH))):
                    raise ValueError(f"'%' widths are at most {_MAX_WIDTH}")
                width += int(part) if part else 0
        self.spend(len(text) + width + sum(_size(str(value)) for value in values))

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        function = self._OPERATORS.get(type(node.op))
        if function is None:
            raise ValueError(f"operator {type(node.op).__name__} is not allowed")
        return function(self.visit(node.operand))

    def visit_ListComp(self, node: ast.ListComp) -> Any:
        return list(self._comprehension(node.elt, node.generators, 0))

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> Any:
        return list(self._comprehension(node.elt, node.generators, 0))

    def _comprehension(
        self, element: ast.expr, generators: list[ast.comprehension], level: int
    ) -> Iterator[Any]:
        if level == len(generators):
            self.spend(1)  # an item of the list made
            yield self.visit(element)
            return
        generator = generators[level]
        if not isinstance(generator.target, ast.Name) or generator.is_async:
            raise ValueError("comprehensions may only bind plain names")
        saved = self.names
        try:
            for item in self.visit(generator.iter):
                self.step()
                self.names = {**saved, generator.target.id: item}
                if all(self.visit(condition) for condition in generator.ifs):
                    yield from self._comprehension(element, generators, level + 1)
        finally:
            self.names = saved

    def visit_Compare(self, node: ast.Compare) -> Any:
        comparisons: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
            ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
            ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
        }  # fmt: skip
        left = self.visit(node.left)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self.visit(right_node)
            # A comparison or a search walks its operands: a step an item.
            for operand in (left, right):
                if isinstance(operand, range) and not isinstance(left, int):
                    self.steps -= len(operand)
                else:
                    self.steps -= _size(operand)
            self.step()
            if not comparisons[type(op)](left, right):
                return False
            left = right
        return True


def remote_substitute(
    string: str, all_hosts: Sequence[Any], index: int, frame_context: Namespace
) -> str:
    """execo's function: ``string`` substituted for ``all_hosts[index]``,
    expressions evaluated in ``frame_context`` (globals, locals)."""
    host = all_hosts[index]
    address = getattr(host, "address", None) or str(host)
    return Substitution([string], frame_context).apply(string, address, index)
