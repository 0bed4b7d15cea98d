"""The layers are a rule the code keeps: the import contracts of
``.importlinter`` hold (run by import-linter, as ``nox -s lint`` does), every
module of the package is placed in a layer, the far side imports nothing but
the standard library, and the drawing of the layers in
docs/architecture.rst is the one the contracts make.

``python tests/test_architecture.py`` prints that drawing (paste it into
docs/architecture.rst when the layers change); ``--report`` lists every
import between the core and a layer, and every import cycle.
"""

from __future__ import annotations

import configparser
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent
CONTRACTS = ROOT / ".importlinter"
ARCHITECTURE = ROOT / "docs" / "architecture.rst"
#: The comment that opens the drawing's literal block in architecture.rst.
DRAWING_MARK = ".. The layers, drawn from .importlinter by tests/test_architecture.py."


def contracts() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(inline_comment_prefixes=None)
    parser.read(CONTRACTS, encoding="utf-8")
    return parser


def _lines(value: str) -> list[str]:
    """The entries of a multi-line option, without its comment lines."""
    return [
        line.strip()
        for line in value.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def layers() -> list[list[str]]:
    """The layers contract's layers, top first: each a list of modules."""
    rows = _lines(contracts()["importlinter:contract:layers"]["layers"])
    return [[name.strip() for name in row.replace("|", ":").split(":")] for row in rows]


def core_modules() -> set[str]:
    """The core, as the contract that forbids it the layers names it."""
    return set(_lines(contracts()["importlinter:contract:core"]["source_modules"]))


#: What each layer is, named by a module it holds.
LABELS = {
    "asyncgw.__main__": "entry points",
    "asyncgw.compat": "execnet alias",
    "asyncgw.cli": "CLI, blocking facade",
    "asyncgw.fleet": "layers",
    "asyncgw._gateway": "the core",
    "asyncgw.remote": "far side",
}


def render_layers() -> str:
    """The drawing of the layers, top to bottom, from the layers contract:
    ``|`` between parts that must not import each other, ``:`` between parts
    of one layer that may."""
    out = []
    for number, layer in enumerate(layers()):
        label = next((text for name, text in LABELS.items() if name in layer), "")
        separator = (
            " | "
            if "|" in _lines(contracts()["importlinter:contract:layers"]["layers"])[number]
            else " : "
        )
        text = separator.join(name.removeprefix("asyncgw.") for name in layer)
        body = textwrap.wrap(text, 50, break_on_hyphens=False)
        for index, line in enumerate(body):
            opening = "[ " if index == 0 else "  "
            closing = " ]" if index == len(body) - 1 else ""
            out.append(f"{label if index == 0 else '':<22}{opening}{line}{closing}")
        if number < len(layers()) - 1:
            out.append(f"{'':<22}    |")
    return "\n".join(out) + "\n"


def drawing_in_docs() -> str:
    """The literal block after :data:`DRAWING_MARK` in architecture.rst."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    assert DRAWING_MARK in text, f"{ARCHITECTURE} has no layers drawing ({DRAWING_MARK!r})"
    after = text.split(DRAWING_MARK, 1)[1].split("::\n\n", 1)[1]
    block = []
    for line in after.splitlines():
        if line and not line.startswith("    "):
            break
        block.append(line[4:])
    return textwrap.dedent("\n".join(block)).strip("\n") + "\n"


def test_import_contracts_hold() -> None:
    """import-linter keeps every contract of .importlinter (far side, core,
    layers, CLI, no cycles in the core but the listed TYPE_CHECKING ones)."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command as run; sys.exit(run())",
            "--no-cache",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_every_module_of_the_package_is_in_one_layer() -> None:
    """A new module or package must be placed: in the layers contract, and,
    if it is core, in the core contract too."""
    placed = [module for layer in layers() for module in layer]
    assert len(placed) == len(set(placed)), f"a module is in two layers: {placed}"
    children = {
        f"asyncgw.{path.stem if path.suffix == '.py' else path.name}"
        for path in (ROOT / "asyncgw").iterdir()
        if (path.suffix == ".py" and path.name != "__init__.py")
        or (path.is_dir() and (path / "__init__.py").exists())
    }
    assert children == set(placed), (
        f"not in a layer: {sorted(children - set(placed))}; "
        f"no such module: {sorted(set(placed) - children)}"
    )
    core_layer = next(set(layer) for layer in layers() if "asyncgw._gateway" in layer)
    assert core_layer == core_modules()


#: Imports of the far side beyond the standard library, each optional and
#: made inside a function: the wire codec imports numpy only when an array
#: arrives (and says so with a LoadError where numpy is missing).
OPTIONAL_FAR_SIDE_IMPORTS = {("asyncgw._wire", "numpy")}


def test_the_far_side_imports_only_the_standard_library() -> None:
    """What is shipped as source (remote/, server.py, _wire.py) imports no
    third-party package, whatever the contract's list of them says, but
    the optional ones listed above, and those only inside functions."""
    import grimp

    graph = grimp.build_graph("asyncgw", include_external_packages=True, cache_dir=None)
    far_side = {"asyncgw.server", "asyncgw._wire"} | {
        module for module in graph.modules if module.startswith("asyncgw.remote")
    }
    foreign = {
        (module, imported)
        for module in far_side
        for imported in graph.find_modules_directly_imported_by(module)
        if not imported.startswith("asyncgw") and imported not in sys.stdlib_module_names
    }
    assert not foreign - OPTIONAL_FAR_SIDE_IMPORTS, sorted(foreign)
    for module, imported in foreign:
        for detail in graph.get_import_details(importer=module, imported=imported):
            line = ROOT / (module.replace(".", "/") + ".py")
            text = line.read_text(encoding="utf-8").splitlines()[detail["line_number"] - 1]
            assert text.startswith(" "), f"{module} imports {imported} at module level"


def test_the_layers_drawing_in_the_docs_is_the_contracts() -> None:
    assert drawing_in_docs() == render_layers(), (
        "docs/architecture.rst's drawing differs from .importlinter's layers: "
        "paste the output of `python tests/test_architecture.py` there\n" + render_layers()
    )


def report() -> str:
    """Every import between the core and a layer (TYPE_CHECKING and
    function-level ones too), and every import cycle among the package's
    modules (strongly connected sets)."""
    import grimp

    graph = grimp.build_graph("asyncgw", cache_dir=None)
    core = core_modules()

    def in_core(module: str) -> bool:
        return any(module == name or module.startswith(name + ".") for name in core)

    def is_layer(module: str) -> bool:
        return (
            not in_core(module)
            and module not in {"asyncgw"}
            and not module.startswith(("asyncgw.remote", "asyncgw.server", "asyncgw._wire"))
        )

    lines = ["imports from the core to a layer above it:"]
    lines.extend(
        f"  {module} -> {imported}: line {detail['line_number']}"
        for module in sorted(m for m in graph.modules if in_core(m))
        for imported in sorted(graph.find_modules_directly_imported_by(module))
        if is_layer(imported)
        for detail in graph.get_import_details(importer=module, imported=imported)
    )
    lines.append("import cycles (sets of modules that import each other, all imports):")
    lines.extend(f"  {len(cycle)}: " + ", ".join(cycle) for cycle in _cycles(graph))
    return "\n".join(lines) + "\n"


def _cycles(graph: Any) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in edges[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(modules)))
    for module in modules:
        if module not in index:
            visit(module)
    return sorted(found)


if __name__ == "__main__":
    print(report() if "--report" in sys.argv else render_layers(), end="")
