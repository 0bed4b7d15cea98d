"""The installed pytest plugins, imported ahead in xdist's fork server.

Named in the fork server's preload by :mod:`asyncgw.xdist` (never imported
by the controller): importing this module imports the modules of the
``pytest11`` entry points as every worker's pytest would, through pytest's
assertion-rewriting import hook with the same modules marked for rewriting
(the top-level modules of the distributions that have such entry points).
Each forked worker then finds them imported and rewritten: its pytest
does not import them again, and does not warn about them either (a module
whose loader is a rewriting hook is one pytest rewrote). That spares every
worker the plugins' imports (75 ms a worker with the plugins installed
here). The hook is removed before any fork.

Only what pytest itself would import on its own is imported, and only as
it would: :mod:`asyncgw.xdist` names this module only when the session
rewrites assertions, blocks none of the plugins and has no assertion pass
hook. If anything here fails, the workers import what is missing
themselves, as they would without it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types
from typing import Any

__all__ = ["preload_plugins"]

#: pytest's default for ``python_files``: the hook rewrites modules whose
#: files match it, but none of the plugins' does.
_PYTHON_FILES = ["test_*.py", "*_test.py"]


class _RewriteConfig:
    """What pytest's rewriting hook asks of a config, with pytest's
    defaults (the controller checked that the session keeps them)."""

    def __init__(self, state_key: Any) -> None:
        import pytest

        self.stash = pytest.Stash()
        self.stash[state_key] = types.SimpleNamespace(
            mode="rewrite", hook=None, trace=lambda *message: None
        )

    def getini(self, name: str) -> Any:
        if name == "python_files":
            return list(_PYTHON_FILES)
        if name == "enable_assertion_pass_hook":
            return False
        raise ValueError(name)

    def issue_config_time_warning(self, warning: Warning, stacklevel: int) -> None:
        """Nothing to warn about: nothing marked is imported before the hook."""


def preload_plugins() -> list[str]:
    """Import the ``pytest11`` entry points' modules through a rewriting
    hook; return their names. Does nothing if plugin autoloading is off."""
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return []
    from importlib.metadata import distributions

    from _pytest.assertion.rewrite import AssertionRewritingHook, assertstate_key
    from _pytest.config import _iter_rewritable_modules

    config = _RewriteConfig(assertstate_key)
    hook = AssertionRewritingHook(config)  # type: ignore[arg-type]
    plugins = [
        distribution for distribution in distributions()
        if any(entry.group == "pytest11" for entry in distribution.entry_points)
    ]  # fmt: skip
    files = (str(file) for distribution in plugins for file in distribution.files or [])
    hook.mark_rewrite(*_iter_rewritable_modules(files))
    modules = sorted(
        {
            entry.module
            for distribution in plugins
            for entry in distribution.entry_points
            if entry.group == "pytest11"
        }
    )
    sys.meta_path.insert(0, hook)
    try:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:
                continue
    finally:
        sys.meta_path.remove(hook)
    return modules


# Should this pytest differ, the workers import their plugins themselves.
with contextlib.suppress(Exception):
    preload_plugins()
