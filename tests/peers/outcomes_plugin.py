"""A pytest plugin for execnet's suite run (harness only): writes every test's
outcome to the JSON file named by ``ASYNCGW_OUTCOMES``.

JUnit XML counts an XPASS as passed; this keeps them apart. Outcomes, one
per test id: ``passed``, ``failed`` (call), ``error`` (setup or teardown),
``skipped``, ``xfailed``, ``xpassed``; each with the first line of its
message where it has one.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

_outcomes: dict[str, dict[str, str]] = {}


def _first_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).strip().splitlines()[0][:300] if crash.message else ""
    if isinstance(report.longrepr, tuple):  # a skip: (file, line, reason)
        return str(report.longrepr[2])[:300]
    text = str(report.longrepr or "").strip()
    return text.splitlines()[-1][:300] if text else ""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    wasxfail = hasattr(report, "wasxfail")
    outcome: str
    if report.when == "call":
        outcome = ("xfailed" if report.skipped else "xpassed") if wasxfail else report.outcome
    elif report.failed:
        outcome = "error"
    elif report.skipped:
        outcome = "xfailed" if wasxfail else "skipped"
    else:
        return  # a passing setup or teardown says nothing of its own
    previous = _outcomes.get(report.nodeid, {}).get("outcome")
    if previous in ("failed", "error") or (previous == "passed" and outcome == "passed"):
        return  # a failure is never overwritten by a later phase
    message = "" if outcome == "passed" else _first_line(report)
    _outcomes[report.nodeid] = {"outcome": outcome, "message": message}


def pytest_sessionfinish(session: pytest.Session, exitstatus: Any) -> None:
    path = os.environ.get("ASYNCGW_OUTCOMES")
    if path:
        with open(path, "w") as out:
            json.dump(_outcomes, out, indent=1, sort_keys=True)
