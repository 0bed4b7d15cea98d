"""SECURITY.md keeps its promise to name a test for every guarantee: each
row of its table names at least one test, and every test it names exists.
(A renamed or deleted test would otherwise leave a guarantee that nothing
checks, while the page still says it is tested.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SECURITY = ROOT / "SECURITY.md"

#: ``tests/file.py`` or ``tests/file.py::name``, then ``::name`` in backticks
#: for more names in the same file (as the table writes them).
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`")


def rows() -> list[tuple[str, str]]:
    """(guarantee, test column) of each row of the table, header excluded."""
    found = []
    for line in SECURITY.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 3 or set(cells[0]) <= {"-", " "}:
            continue
        if cells[0] == "guarantee":
            continue
        found.append((cells[0], cells[2]))
    return found


def references(column: str) -> list[tuple[str, str | None]]:
    """(file, test name or None) named in one row's test column."""
    named: list[tuple[str, str | None]] = []
    current: str | None = None
    for match in REFERENCE.finditer(column):
        path, name, more = match.groups()
        if path is not None:
            current = path
            named.append((path, name))
        else:
            assert current is not None, f"'::{more}' before any file in {column!r}"
            named.append((current, more))
    return named


def defined_names(path: Path) -> set[str]:
    """Functions and classes at the top level of a test module."""
    tree = ast.parse(path.read_text())
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {node.name for node in tree.body if isinstance(node, kinds)}


def test_the_table_has_rows() -> None:
    assert len(rows()) >= 10


@pytest.mark.parametrize(("guarantee", "column"), rows(), ids=[g[:40] for g, _ in rows()])
def test_each_guarantee_names_tests_that_exist(guarantee: str, column: str) -> None:
    named = references(column)
    assert named, f"{guarantee!r} names no test"
    for path, name in named:
        module = ROOT / path
        assert module.is_file(), f"{guarantee!r}: no file {path}"
        if name is not None:
            assert name in defined_names(module), f"{guarantee!r}: no {path}::{name}"
