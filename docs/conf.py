"""Sphinx configuration for asyncgw's documentation.

The build is offline (intersphinx only with ASYNCGW_DOCS_ONLINE=1) and
``-W`` clean (``nox -s docs``, ``tests/test_docs.py``). Theme: Furo, with
copy buttons on code blocks (the prompts of ``console`` blocks are not
copied) and inline tabs for the async and blocking faces side by side.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import asyncgw

# docs/_ext: the extension that makes tables and charts from the benchmark
# results (docs/_results/*.json) when the docs are built.
_EXT = Path(__file__).parent / "_ext"
sys.path.insert(0, str(_EXT))

project = "asyncgw"
author = "the asyncgw developers"
copyright = "the asyncgw developers"
release = asyncgw.__version__
# myst_parser: SECURITY.md and CHANGELOG.md are included as they are (security.rst,
# changelog.rst).
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "myst_parser",
    "sphinx_copybutton",
    "sphinx_inline_tabs",
]
# The results extension, once it is there (helper BENCHJSON's docs/_ext).
extensions += [path.stem for path in sorted(_EXT.glob("*.py")) if not path.stem.startswith("_")]
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "asyncssh": ("https://asyncssh.readthedocs.io/en/latest", None),
}
# Inventories are fetched from the internet only when asked for
# (ASYNCGW_DOCS_ONLINE=1): builds here and in CI stay offline.
if not os.environ.get("ASYNCGW_DOCS_ONLINE"):
    intersphinx_mapping = {}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
nitpicky = False
exclude_patterns = ["_build", "_screenshots", "_results"]
html_theme = "furo"
html_title = f"asyncgw {release}"
html_theme_options = {
    "navigation_with_keys": True,
}
# _static/custom.css: wide tables scroll inside their box instead of
# pushing the page wider (Furo links it after its own CSS).
html_static_path = ["_static"]
html_css_files = ["custom.css"]
pygments_style = "friendly"
pygments_dark_style = "monokai"
# Copy buttons: prompts ("$ ", ">>> ", "... ") and console output are not copied.
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = True
# asyncgw.Group and asyncgw.sync.Group share a name on purpose (execnet names).
suppress_warnings = ["ref.python"]
