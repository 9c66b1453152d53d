"""The house's shape: every import of every module in distgan/ (lazy and type-only ones included)
goes to its own floor or below, per the table in distgan/__init__.py; no import circle; no module
over 500 lines; the config sections import no torch."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import distgan

PACKAGE = Path(distgan.__file__).parent
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The distgan modules `path` imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` the module mod.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # distgan.x.y.Name -> distgan.x.y
                target = target.rpartition(".")[0]
            if target.startswith("distgan") and target not in ("distgan", name):
                found.add(target)
    return found


def _floors() -> dict[str, int]:
    table = re.search(r"floor  modules\n(.*?)\n\n", distgan.__doc__, re.S).group(1)
    floors = {}
    for line in table.splitlines():
        floor, names = line.split(None, 1)
        for n in names.split(","):
            floors[f"distgan.{n.strip()}"] = int(floor)
    return floors


def _floor_of(module: str, floors: dict[str, int]) -> int:
    for prefix in sorted(floors, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return floors[prefix]
    raise AssertionError(f"{module} has no floor in distgan/__init__.py's table")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def test_every_import_goes_to_its_own_floor_or_below():
    floors = _floors()
    upward = [f"{m} (floor {_floor_of(m, floors)}) imports {t} (floor {_floor_of(t, floors)})"
              for m, targets in _graph().items() for t in sorted(targets)
              if _floor_of(t, floors) > _floor_of(m, floors)]
    assert not upward, "imports up a floor:\n" + "\n".join(upward)


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt):] + [node, nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_floor_checker_sees_lazy_and_type_only_imports(tmp_path):
    """The checks above can fail: an import inside a function and one under TYPE_CHECKING are arrows."""
    pkg = tmp_path / "distgan"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from distgan.high import X\n")
    (pkg / "high.py").write_text("def f():\n    from distgan import low\n")
    modules = {"distgan": pkg / "__init__.py", "distgan.low": pkg / "low.py", "distgan.high": pkg / "high.py"}
    assert _imports(modules["distgan.low"], "distgan.low", modules) == {"distgan.high"}
    assert _imports(modules["distgan.high"], "distgan.high", modules) == {"distgan.low"}


def test_no_module_over_500_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_config_sections_and_composition_import_no_torch():
    """`distgan train --dry-run` runs on a login node without a GPU stack: every config module,
    the games' registry and the data manifest import without torch."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "import distgan.config, distgan.config_change, distgan.sections.games, distgan.data.manifest, distgan.cli\n"
            "distgan.config.load_config('configs/cogan_digits_negative.yaml')\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)


def _private_imports() -> list[str]:
    """`from distgan.<pkg>... import _name` in a module outside that subpackage."""
    out = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("distgan."):
                home = node.module.split(".")[1]
                if name.split(".")[1:2] != [home]:
                    out += [f"{name} imports {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return out


def test_no_module_imports_a_private_name_from_another_package():
    assert not _private_imports(), "private names used across packages:\n" + "\n".join(_private_imports())
