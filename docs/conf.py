"""Sphinx configuration for asyncgw's documentation."""

from __future__ import annotations

import os

import asyncgw

project = "asyncgw"
author = "the asyncgw developers"
release = asyncgw.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx"]
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "asyncssh": ("https://asyncssh.readthedocs.io/en/latest", None),
}
# Machines without internet build with ASYNCGW_DOCS_OFFLINE=1: no inventories.
if os.environ.get("ASYNCGW_DOCS_OFFLINE"):
    intersphinx_mapping = {}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
nitpicky = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
# asyncgw.Group and asyncgw.sync.Group share a name on purpose (execnet names).
suppress_warnings = ["ref.python"]
