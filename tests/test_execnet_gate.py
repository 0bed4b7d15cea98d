"""The gate on execnet's own suite (tests/peers/execnet_suite.py): an explicit
list of expected failures, each with its reason; any other failure fails the
run, so does a listed test that passes, and XPASS is counted apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from .peers.execnet_suite import EXPECTED, REASONS, entry_failures, judge, load_expected

FILES = ["test_gateway.py"]
ENTRIES: list[dict[str, object]] = [
    {
        "reason": "execnet internal",
        "why": "a private attribute",
        "tests": ["testing/test_gateway.py::test_private[*]"],
    },
    {"reason": "by design", "why": "on purpose", "tests": ["testing/test_gateway.py::test_design"]},
]


def outcome(name: str, message: str = "") -> dict[str, str]:
    return {"outcome": name, "message": message}


def test_listed_failures_pass_the_gate_and_xpass_is_counted_apart() -> None:
    counts, unexpected, stale = judge(
        {
            "testing/test_gateway.py::test_private[thread-popen]": outcome("failed"),
            "testing/test_gateway.py::test_private[thread-ssh]": outcome("skipped"),
            "testing/test_gateway.py::test_design": outcome("error"),
            "testing/test_gateway.py::test_ok": outcome("passed"),
            "testing/test_gateway.py::test_flaky": outcome("xpassed"),
            "testing/test_gateway.py::test_slow": outcome("xfailed"),
        },
        ENTRIES,
        FILES,
    )
    assert (unexpected, stale) == ([], [])
    assert counts == {
        "passed": 1,
        "expected_failures": 2,
        "xpassed": 1,
        "xfailed": 1,
        "skipped": 1,
        "unexpected_failures": 0,
    }


def test_a_failure_not_listed_fails_the_gate() -> None:
    counts, unexpected, _ = judge(
        {
            "testing/test_gateway.py::test_private[thread-popen]": outcome("failed"),
            "testing/test_gateway.py::test_design": outcome("failed"),
            "testing/test_gateway.py::test_new": outcome("failed", "AttributeError: _group"),
        },
        ENTRIES,
        FILES,
    )
    assert counts["unexpected_failures"] == 1
    assert unexpected == ["FAILED  testing/test_gateway.py::test_new: AttributeError: _group"]


def test_a_listed_failure_that_passes_or_vanishes_fails_the_gate() -> None:
    _, _, stale = judge(
        {
            "testing/test_gateway.py::test_private[thread-popen]": outcome("failed"),
            "testing/test_gateway.py::test_private[main_thread_only-popen]": outcome("passed"),
        },
        ENTRIES,
        FILES,
    )
    assert stale == [
        "PASSED  testing/test_gateway.py::test_private[main_thread_only-popen]: "
        "listed as an expected failure",
        "NO TEST testing/test_gateway.py::test_design: listed, but no such test ran",
    ]
    # An entry of a file that did not run is not stale.
    assert judge({}, ENTRIES, ["test_channel.py"])[2] == []


def test_the_list_gives_each_entry_a_known_reason(tmp_path: Path) -> None:
    entries = load_expected(EXPECTED)
    assert entries and {entry["reason"] for entry in entries} <= set(REASONS)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[expected]]\nreason = "flaky"\nwhy = "?"\ntests = ["x"]\n')
    with pytest.raises(SystemExit, match="reason"):
        load_expected(bad)


def test_each_entry_counts_its_failures_for_the_docs() -> None:
    found = entry_failures(
        {
            "testing/test_gateway.py::test_private[thread-popen]": outcome("failed"),
            "testing/test_gateway.py::test_private[thread-ssh]": outcome("error"),
            "testing/test_gateway.py::test_private[thread-proxy]": outcome("skipped"),
            "testing/test_gateway.py::test_design": outcome("passed"),
        },
        ENTRIES,
    )
    assert found == [
        {"reason": "execnet internal", "why": "a private attribute", "tests": ["test_private"],
         "failed": 2},
        {"reason": "by design", "why": "on purpose", "tests": ["test_design"], "failed": 0},
    ]  # fmt: skip
