"""execo's substitutions in commands and paths.

- ``{{{host}}}`` becomes the address of the host the string is for;
- ``{{expression}}`` becomes ``value[index % len(value)]``, where
  ``value`` is the expression evaluated in the frame that created the
  action (its globals and locals, at construction) and ``index`` the
  host's position in the action's host list. Unlike execo, the expression
  is not handed to ``eval``: names, attributes, subscripts, literals,
  arithmetic and comprehensions are allowed, calls and private names are
  not (see :func:`evaluate`), since a command may carry text from
  elsewhere.

So ``Remote('iperf -c {{[h.address for h in hosts2]}}', hosts1)`` pairs
the hosts of ``hosts1`` with those of ``hosts2`` in turn.
"""

from __future__ import annotations

import ast
import operator
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

__all__ = ["Substitution", "caller_namespace", "evaluate", "remote_substitute"]

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
                    value = evaluate(expression, {**namespace[0], **namespace[1]})
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


def evaluate(expression: str, names: dict[str, Any]) -> Any:
    """The value of ``expression``, a restricted Python expression: names,
    constants, public attributes, subscripts and slices, lists and tuples,
    arithmetic, and comprehensions over these. No calls and no ``_names``:
    a command string may carry text that came from elsewhere (a host's
    output), and ``{{...}}`` in it must not be a way to run code here.

    :raises ValueError: for anything outside that subset.
    """
    tree = ast.parse(expression.strip(), mode="eval")
    return _Evaluator(names).visit(tree.body)


class _Evaluator(ast.NodeVisitor):
    _OPERATORS: ClassVar[dict[type[ast.AST], Any]] = {
        ast.Add: operator.add,
        ast.Sub: operator.sub,
        ast.Mult: operator.mul,
        ast.FloorDiv: operator.floordiv,
        ast.Mod: operator.mod,
        ast.USub: operator.neg,
    }

    def __init__(self, names: dict[str, Any]) -> None:
        self.names = names

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
        return self.visit(node.value)[self.visit(node.slice)]

    def visit_Slice(self, node: ast.Slice) -> Any:
        parts = (node.lower, node.upper, node.step)
        return slice(*(None if part is None else self.visit(part) for part in parts))

    def visit_List(self, node: ast.List) -> Any:
        return [self.visit(element) for element in node.elts]

    def visit_Tuple(self, node: ast.Tuple) -> Any:
        return tuple(self.visit(element) for element in node.elts)

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        function = self._OPERATORS.get(type(node.op))
        if function is None:
            raise ValueError(f"operator {type(node.op).__name__} is not allowed")
        return function(self.visit(node.left), self.visit(node.right))

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
            yield self.visit(element)
            return
        generator = generators[level]
        if not isinstance(generator.target, ast.Name) or generator.is_async:
            raise ValueError("comprehensions may only bind plain names")
        saved = self.names
        try:
            for item in self.visit(generator.iter):
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
