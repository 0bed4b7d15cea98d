"""What ``import asyncgw.sync`` costs, and ``import execnet`` through
:mod:`asyncgw.compat`.

execnet-style code and pytest-xdist (whose every worker start imports the
facade) get the channels, gateways and groups, nothing more: the
objects, files, pool and fleet twins are imported on first use, and
nothing imports asyncssh, cryptography or the CLI's rich. Each check runs
in a fresh interpreter, since this test process has imported everything.
The facade's modules import each other downward only (no circle at run
time), which the last test reads from their source.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import asyncgw

SYNC = Path(asyncgw.__file__).parent / "sync"

#: Modules ``import asyncgw.sync`` must leave out: third-party packages that
#: only the fleet, the CLI or SSH need, the layers above the core, the
#: facade's own twins of them, and the real execnet.
NOT_IMPORTED = [
    "asyncssh",
    "cryptography",
    "bcrypt",
    "rich",
    "psutil",
    "execnet",
    "asyncgw.cli",
    "asyncgw.compat",
    "asyncgw.fleet",
    "asyncgw.files",
    "asyncgw.objects.proxy",
    "asyncgw.objects.logs",
    "asyncgw.objects.imports",
    "asyncgw.remote.rsync",
    "asyncgw.transports.ssh",
    "asyncgw.transports.sshpool",
    "asyncgw.sync.execnet_compat",
    "asyncgw.sync.files",
    "asyncgw.sync.fleet",
    "asyncgw.sync.objects",
    "asyncgw.sync.pool",
]

#: A name of the facade imported on first use, and the module it comes from
#: (in an order where no module is imported by one before it).
LAZY = {
    "Report": "asyncgw.fleet.report",
    "RSync": "asyncgw.sync.files",
    "Executor": "asyncgw.sync.pool",
    "fetch": "asyncgw.sync.objects",
    "Remote": "asyncgw.sync.fleet",
}


def run_python(source: str) -> str:
    """Run ``source`` in a fresh interpreter (no ``execnet`` alias, no
    imports of this process); its standard output."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def imported() -> set[str]:
    """The modules loaded by ``import asyncgw.sync`` in a fresh interpreter."""
    out = run_python(
        """
        import json, sys
        import asyncgw.sync
        print(json.dumps(sorted(sys.modules)))
        """
    )
    return set(json.loads(out))


def test_import_sync_gives_the_facade(imported: set[str]) -> None:
    assert {"asyncgw.sync", "asyncgw.sync.channel", "asyncgw.sync.group"} <= imported


@pytest.mark.parametrize("module", NOT_IMPORTED)
def test_import_sync_leaves_out(imported: set[str], module: str) -> None:
    assert module not in imported
    assert not [name for name in imported if name.startswith(module + ".")]


def test_lazy_names_import_their_module_on_first_use() -> None:
    out = run_python(
        f"""
        import json, sys
        import asyncgw.sync
        seen = {{}}
        for name, module in {LAZY!r}.items():
            before = module in sys.modules
            value = getattr(asyncgw.sync, name)
            seen[name] = [before, module in sys.modules, value.__module__]
        print(json.dumps(seen))
        """
    )
    seen = json.loads(out)
    for name, module in LAZY.items():
        assert seen[name] == [False, True, module], name


def test_star_import_gives_execnets_names() -> None:
    out = run_python(
        """
        import json
        namespace = {}
        exec("from asyncgw.sync import *", namespace)
        print(json.dumps(sorted(set(namespace) - {"__builtins__"})))
        """
    )
    import asyncgw.sync

    assert json.loads(out) == sorted(asyncgw.sync.__all__)


def test_compat_install_makes_import_execnet_give_the_facade() -> None:
    out = run_python(
        """
        import sys
        import asyncgw.compat
        import asyncgw.sync

        assert asyncgw.compat.install() is asyncgw.sync
        assert asyncgw.compat.install() is asyncgw.sync  # idempotent
        import execnet
        import execnet.gateway_base
        from execnet.gateway import Gateway
        from execnet.multi import Group, default_group
        from execnet.rsync import RSync
        from execnet.xspec import XSpec

        assert execnet is asyncgw.sync
        assert Gateway is asyncgw.sync.Gateway and Group is asyncgw.sync.Group
        assert default_group is asyncgw.sync.default_group
        assert RSync is asyncgw.sync.RSync and XSpec is asyncgw.sync.XSpec
        for name in ("gateway", "gateway_base", "multi", "rsync", "xspec"):
            # one object, by attribute or by import
            assert getattr(execnet, name) is sys.modules["execnet." + name], name
        assert execnet.gateway_base.RemoteError is asyncgw.RemoteError
        print("ok")
        """
    )
    assert out.split() == ["ok"]


def test_compat_uninstall_gives_back_the_real_execnet() -> None:
    pytest.importorskip("execnet")  # the real one, in the fresh interpreter too
    out = run_python(
        """
        import sys
        import execnet as real
        import asyncgw.compat
        import asyncgw.sync

        asyncgw.compat.install()
        assert sys.modules["execnet"] is asyncgw.sync
        asyncgw.compat.uninstall()
        import execnet
        assert execnet is real and execnet is not asyncgw.sync
        assert "execnet.multi" not in sys.modules or sys.modules["execnet.multi"].__file__
        asyncgw.compat.uninstall()  # a second time: nothing to do
        assert sys.modules["execnet"] is real
        print("ok")
        """
    )
    assert out.split() == ["ok"]


def test_compat_uninstall_without_execnet_leaves_none() -> None:
    out = run_python(
        """
        import sys
        import asyncgw.compat

        asyncgw.compat.install()
        asyncgw.compat.uninstall()
        print(sorted(name for name in sys.modules if name.partition(".")[0] == "execnet"))
        """
    )
    assert out.split() == ["[]"]


def _runtime_imports(path: Path) -> set[str]:
    """The modules of ``asyncgw/sync/`` (``__init__`` for the package's
    face) that ``path`` imports when it runs: anywhere but under ``if
    TYPE_CHECKING:``."""
    siblings = {child.stem for child in SYNC.glob("*.py")} - {"__init__"}
    found: set[str] = set()

    def add(module: str, names: list[str]) -> None:
        if module == "asyncgw.sync":  # a submodule by name, else the face
            found.update(name if name in siblings else "__init__" for name in names)
        elif module.startswith("asyncgw.sync."):
            found.add(module.split(".")[2])

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) == "TYPE_CHECKING":
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.ImportFrom):
                base = {0: "", 1: "asyncgw.sync", 2: "asyncgw"}[child.level]
                module = ".".join(part for part in (base, child.module) if part)
                add(module, [alias.name for alias in child.names])
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, [])
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def test_facade_modules_import_downward_only() -> None:
    graph = {path.stem: _runtime_imports(path) for path in sorted(SYNC.glob("*.py"))}
    assert {"__init__", "channel", "gateway", "group", "execnet_compat"} <= set(graph)
    # Nothing imports the package's face, which imports the rest.
    assert not [name for name, imports in graph.items() if "__init__" in imports]
    # No circle: the modules can be put in an order that imports backward only.
    order: list[str] = []
    remaining = dict(graph)
    while remaining:
        ready = [name for name, imports in remaining.items() if imports <= set(order)]
        assert ready, f"import circle among {sorted(remaining)}: {remaining}"
        order.extend(sorted(ready))
        for name in ready:
            del remaining[name]
