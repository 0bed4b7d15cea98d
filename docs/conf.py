"""Sphinx configuration for asyncgw's documentation."""

from __future__ import annotations

import os

import asyncgw

project = "asyncgw"
author = "the asyncgw developers"
copyright = "the asyncgw developers"
release = asyncgw.__version__
# myst_parser: SECURITY.md and CHANGELOG.md are included as they are (security.rst,
# changelog.rst).
extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx", "myst_parser"]
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
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_theme_options = {
    "description": "asyncio-native remote execution",
    "page_width": "1180px",
    "sidebar_width": "230px",
    "fixed_sidebar": True,
}
html_static_path = ["_static"]  # custom.css, which alabaster links on every page
# The whole table of contents in the sidebar, on every page.
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
# _static/custom.css (which alabaster links on every page): wide tables and
# outputs scroll, the benchmark tables in a smaller font.
html_static_path = ["_static"]
# asyncgw.Group and asyncgw.sync.Group share a name on purpose (execnet names).
suppress_warnings = ["ref.python"]
