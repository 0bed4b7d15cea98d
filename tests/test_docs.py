"""The docs: every public name has a docstring and is in the API reference;
the built site has no broken internal link.

The site is built once per session with Sphinx (``-W``, offline) into a
temporary directory; the reference's entries are read from its
``objects.inv``, as intersphinx reads it.
"""

from __future__ import annotations

import html.parser
import importlib
import inspect
import os
import posixpath
import subprocess
import sys
import tomllib
import types
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from sphinx.util.inventory import InventoryFile

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"

#: The modules whose public names make the API, in the order that decides
#: where an object exported by several of them is described (the first);
#: the others' entries for it say where.
MODULES = [
    "asyncgw",
    "asyncgw.fleet",
    "asyncgw.files",
    "asyncgw.objects.proxy",
    "asyncgw.objects.logs",
    "asyncgw.objects.imports",
    "asyncgw.objects.services",
    "asyncgw.objects.supervision",
    "asyncgw.transports",
    "asyncgw.xdist",
    "asyncgw.cli",
    "asyncgw.sync",
    "asyncgw.compat",
]


def import_module(name: str) -> types.ModuleType:
    # asyncgw.xdist makes ``import execnet`` give asyncgw.sync: not in this
    # test process, where other tests may compare with the real execnet.
    saved = {key: value for key, value in sys.modules.items() if key.partition(".")[0] == "execnet"}
    try:
        return importlib.import_module(name)
    finally:
        for key in [key for key in sys.modules if key.partition(".")[0] == "execnet"]:
            del sys.modules[key]
        sys.modules.update(saved)


def public_names(module: types.ModuleType) -> list[str]:
    """``__all__`` (else the names without ``_``), and in asyncgw.sync the
    names its module ``__getattr__`` imports on first use."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name in vars(module) if not name.startswith("_")]
    names = [name for name in names if not name.startswith("__")]  # __version__
    if module.__name__ == "asyncgw.sync":
        lazy = module._FLEET_TWINS | module._FLEET_SHARED | module._OBJECTS
        names += sorted(lazy - set(names))
    return names


def api() -> Iterator[tuple[str, object, bool]]:
    """``(qualified name, object, canonical)`` for every public name."""
    seen: set[int] = set()
    for modname in MODULES:
        module = import_module(modname)
        for name in public_names(module):
            obj = getattr(module, name)  # lazy names resolve here
            described = inspect.isclass(obj) or inspect.isroutine(obj)
            canonical = not described or id(obj) not in seen
            seen.add(id(obj))
            yield f"{modname}.{name}", obj, canonical


def own_members(cls: type) -> Iterator[tuple[str, object]]:
    """The public methods and properties a class defines itself."""
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property | staticmethod | classmethod) or inspect.isfunction(value):
            yield name, value


def docstring(cls: type, name: str, value: object) -> str:
    if isinstance(value, property):
        return inspect.cleandoc(value.__doc__ or "")
    return inspect.getdoc(getattr(cls, name)) or ""  # inherited from a base, as autodoc


def test_public_names_have_docstrings() -> None:
    missing = []
    for qualname, obj, canonical in api():
        if not canonical or not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue  # data: its description is checked in the built reference
        where = f"{qualname} ({getattr(obj, '__module__', '?')})"
        if not (obj.__doc__ or "").strip():
            missing.append(where)
        if inspect.isclass(obj):
            missing.extend(
                f"{qualname}.{name} ({obj.__module__})"
                for name, value in own_members(obj)
                if not docstring(obj, name, value).strip()
            )
    assert not missing, "public names without a docstring:\n" + "\n".join(missing)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs built as HTML, warnings as errors, no network."""
    out = tmp_path_factory.mktemp("docs")
    env = {key: value for key, value in os.environ.items() if key != "ASYNCGW_DOCS_ONLINE"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(out / "doctrees"),
            str(DOCS),
            str(out / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return out / "html"


def test_public_names_in_reference(site: Path) -> None:
    with (site / "objects.inv").open("rb") as stream:
        inventory = InventoryFile.load(stream, "", posixpath.join)
    documented = {
        name for kind, entries in inventory.items() if kind.startswith("py:") for name in entries
    }
    absent = []
    for qualname, obj, canonical in api():
        if qualname not in documented:
            absent.append(qualname)
        elif canonical and inspect.isclass(obj):
            absent.extend(
                f"{qualname}.{name}"
                for name, _ in own_members(obj)
                if f"{qualname}.{name}" not in documented
            )
    assert not absent, "public names missing from the API reference:\n" + "\n".join(absent)


class _Page(html.parser.HTMLParser):
    """The ids, links and sources of one HTML page, and the text of each
    Python object's description up to its first nested description."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.descriptions: dict[str, str] = {}
        self._stack: list[str | None] = []  # per open <dd>: the object it describes
        self._last_dt: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.add(attributes["id"] or "")
        if tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"] or "")
        if tag in ("img", "script") and attributes.get("src"):
            self.links.append(attributes["src"] or "")
        if tag == "link" and attributes.get("href"):
            self.links.append(attributes["href"] or "")
        if tag == "dt":
            self._last_dt = attributes.get("id")
        elif tag == "dd":
            self._stack.append(self._last_dt)
            if self._last_dt:
                self.descriptions[self._last_dt] = ""
            self._last_dt = None
        elif tag == "dl" and self._stack:
            self._stack[-1] = None  # nested members: no longer this object's own text

    def handle_endtag(self, tag: str) -> None:
        if tag == "dd" and self._stack:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        if self._stack and self._stack[-1]:
            self.descriptions[self._stack[-1]] += data


def _pages(site: Path) -> dict[Path, _Page]:
    pages = {}
    for path in site.resolve().rglob("*.html"):
        page = _Page()
        page.feed(path.read_text(encoding="utf-8"))
        pages[path] = page
    return pages


def test_reference_describes_every_name(site: Path) -> None:
    descriptions: dict[str, str] = {}
    for page in _pages(site).values():
        descriptions.update(page.descriptions)
    empty = [qualname for qualname, _, _ in api() if not descriptions.get(qualname, "").strip()]
    assert not empty, "entries of the API reference without a description:\n" + "\n".join(empty)


def test_internal_links(site: Path) -> None:
    pages = _pages(site)
    broken: list[str] = []
    for path, page in pages.items():
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc:
                continue  # not ours (and no network here)
            anchor = unquote(parts.fragment)
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if not target.is_file():
                broken.append(f"{path.name}: {link} (no such file)")
            elif anchor and target in pages and anchor not in pages[target].ids:
                broken.append(f"{path.name}: {link} (no such anchor)")
    assert not broken, "broken internal links:\n" + "\n".join(broken)


def test_sphinx_is_a_test_dependency() -> None:
    # CI installs .[test]: the site must be built there, not skipped.
    with (ROOT / "pyproject.toml").open("rb") as stream:
        extras = tomllib.load(stream)["project"]["optional-dependencies"]
    assert any(requirement.startswith("sphinx") for requirement in extras["test"])
