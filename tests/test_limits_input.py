"""Bounds on what the caller's input may cost: ``{{...}}`` substitutions
and ``@file`` node sets. The hostile cases run in a child interpreter with
a memory limit and a timeout, so that the unbounded code they guard
against could fail them but never take the machine down."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from asyncgw.fleet import Remote, nodeset, substitution
from asyncgw.fleet.nodeset import expand
from asyncgw.fleet.substitution import evaluate, remote_substitute

#: The project's root: the child imports the asyncgw next to these tests.
ROOT = Path(__file__).resolve().parents[1]
#: The child's address-space limit: far above what the bounded code needs,
#: far below what the hostile input would take without bounds.
MEMORY = 1024 * 1024 * 1024
#: Seconds the child may take: the bounded code takes about one at most.
PATIENCE = 60


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def run_bounded(code: str) -> str:
    """Run ``code`` in a child interpreter under :data:`MEMORY` and
    :data:`PATIENCE`; return what it printed. Killed (and failed) at the
    timeout."""
    process = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        preexec_fn=_limit_memory,
        check=False,
    )
    return process.stdout + process.stderr


def remote_error(command: str, build: str | None = None) -> str:
    """What ``Remote(command, "node1")`` raises, in a bounded child (or
    ``Remote(eval(build))``, for a command too long for an argument)."""
    source = build if build is not None else repr(command)
    return run_bounded(
        f"""
        from asyncgw.fleet import Remote
        try:
            Remote({source}, "node1")
        except ValueError as exc:
            print("ValueError:", exc)
        else:
            print("no error")
        """
    )


DIGITS = "[0,1,2,3,4,5,6,7,8,9]"


@pytest.mark.parametrize(
    ("expression", "bound"),
    [
        # 10**8 items of literals and comprehensions: hours of work.
        (f"[a for a in {DIGITS} for b in {DIGITS} for c in {DIGITS} for d in {DIGITS}"
         f" for e in {DIGITS} for f in {DIGITS} for g in {DIGITS} for h in {DIGITS}]",
         "steps"),
        ("[0] * 400000000", "items"),  # 3.2 GB at once
        ("'x' * 3000000000", "items"),
        ("[[0] * 3000 for a in [0] * 3000]", "items"),  # 9e6 items, 3000 at a time
        ("'%999999999d' % 1", "widths"),
        ("[x in x for x in [[0] * 100000] * 100000]", "steps"),  # 1e10 comparisons
    ],
)  # fmt: skip
def test_substitution_is_bounded_in_time_and_memory(expression: str, bound: str) -> None:
    output = remote_error(f"echo {{{{{expression}}}}}")
    assert "ValueError" in output, output
    assert bound in output, output


def test_finding_expressions_is_linear_in_the_string() -> None:
    """The scan for ``{{...}}`` took quadratic time in the number of ``{{``."""
    assert "no error" in remote_error("", build="'echo ' + '{{' * 200_000")
    output = remote_error("", build="'echo {{' + 'x' * 100_000 + '}}'")
    assert f"more than {substitution.MAX_EXPRESSION}" in output, output


def test_natural_expressions_still_work() -> None:
    names = {"hosts2": ["h1", "h2", "h3"], "ports": [22, 2222]}
    context = ({}, names)
    cases = {
        "{{[1,2,3]}}": ["1", "2", "3", "1"],
        "{{range(4)}}": ["0", "1", "2", "3"],
        "{{range(10, 40, 10)}}": ["10", "20", "30", "10"],
        "{{[h for h in hosts2 if h != 'h2']}}": ["h1", "h3", "h1", "h3"],
        "{{['n%02d' % i for i in range(1, 5)]}}": ["n01", "n02", "n03", "n04"],
        "{{ports * 2}}": ["22", "2222", "22", "2222"],
        "{{[len(hosts2)]}}": ["3", "3", "3", "3"],
    }
    for text, expected in cases.items():
        hosts = ["a", "b", "c", "d"]
        got = [remote_substitute(text, hosts, index, context) for index in range(4)]
        assert got == expected, text
    assert len(evaluate("[x * 2 for x in range(100000)]", {})) == 100000
    half = substitution.MAX_SIZE // 2
    assert len(evaluate(f"'x' * {half}", {})) == half
    Remote("echo {{[1, 2]}} {{{host}}}", "node1")  # constructs
    # Only range and len are called:
    for text in (
        "{{sorted([1])}}",
        "{{range(*[3])}}",
        "{{range(stop=3)}}",
        "{{range(3).count(1)}}",
    ):
        with pytest.raises(ValueError, match="not allowed"):
            Remote(f"echo {text}", "node1")
    # A name of the caller's own shadows the builtin: it is not called either.
    with pytest.raises(ValueError, match="not allowed"):
        remote_substitute("{{range(3)}}", ["a"], 0, ({}, {"range": lambda n: [n]}))


def test_a_node_set_file_is_read_with_a_bound() -> None:
    output = run_bounded(
        """
        from asyncgw.fleet.nodeset import expand
        try:
            expand("@/dev/zero")
        except ValueError as exc:
            print("ValueError:", exc)
        """
    )
    assert "ValueError" in output, output
    assert "too big" in output, output


def test_node_set_files_included_twice_count_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files that include one file twice, level after level, would read it
    2**n times: the bytes read are counted, so that ends."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f0").write_text("n[1-100000]\n" + "#" * 1_000_000 + "\n")
    for level in range(1, 15):
        (tmp_path / f"f{level}").write_text(f"@f{level - 1}\n@f{level - 1}\n")
    assert len(expand("@f3")) == 100000  # 8 readings: fine
    with pytest.raises(ValueError, match="too big"):
        expand("@f14")  # 16384 readings of a megabyte


def test_node_set_files_nest_with_a_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    depth = 1000
    (tmp_path / "f0").write_text("node1\n")
    for level in range(1, depth):
        (tmp_path / f"f{level}").write_text(f"@f{level - 1}\n")
    assert expand(f"@f{nodeset.MAX_FILE_DEPTH - 1}") == ["node1"]
    with pytest.raises(ValueError, match="deep"):
        expand(f"@f{depth - 1}")
