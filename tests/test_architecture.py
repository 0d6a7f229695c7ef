"""The package's layers, read from its own imports (docs/architecture.md draws the same table).

Every import of a module of ``xprune_nb`` by another, at module level or inside a function, must
point to the same layer or a lower one; the few that point up are listed in ``UPWARD`` with the
comment that explains them, and the import graph has no loop. Imports under
``if TYPE_CHECKING:`` are annotations only, never run, and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "xprune_nb"

#: lowest first; a module belongs to the layer of its longest matching prefix
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("xprune_nb.core",)),
    ("data", ("xprune_nb.data",)),
    ("shared mechanisms", ("xprune_nb.models.mechanisms",)),
    ("model definitions", ("xprune_nb.models",)),
    ("measurement", ("xprune_nb.measure",)),
    ("criteria", ("xprune_nb.criteria",)),
    ("pruning and explanations", ("xprune_nb.pruning", "xprune_nb.explain")),
    ("record", ("xprune_nb.record",)),
    ("writers", ("xprune_nb.export",)),
    ("facade", ("xprune_nb.study",)),
    ("faces", ("xprune_nb.ui", "xprune_nb")),
]

#: (importer, imported): the imports allowed to point up, each with a comment at the import
UPWARD = {
    ("xprune_nb.measure.step", "xprune_nb.explain.drift"),
    ("xprune_nb.measure.step", "xprune_nb.pruning.dynamic.eval"),
}
MAX_UPWARD = 3
MAX_TOP_LEVEL = 12


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(
                node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            for child in node.body:
                skip.update(id(n) for n in ast.walk(child))
    return skip


def imports_of(module: str) -> list[tuple[str, int]]:
    """(imported module of the package, line) for every import statement in ``module``."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
            targets = [n if n in MODULES else target for n in names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for target in targets:
            if target == "xprune_nb" or target.startswith("xprune_nb."):
                while target not in MODULES and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target != module:
                    found.append((target, node.lineno))
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def upward_imports(graph) -> dict[tuple[str, str], int]:
    """(importer, imported) -> line, for every import that points up the layers."""
    return {(m, t): line for m, ts in graph.items() for t, line in ts
            if layer_of(t) > layer_of(m)}


def import_loops(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, loops = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w, _ in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return loops


def test_imports_point_down_except_the_listed_few():
    upward = upward_imports(GRAPH)
    unexplained = sorted(set(upward) - UPWARD)
    assert not unexplained, "imports up the layers (see docs/architecture.md): " + ", ".join(
        f"{m} -> {t} (line {upward[(m, t)]}; {LAYERS[layer_of(m)][0]} -> "
        f"{LAYERS[layer_of(t)][0]})" for m, t in unexplained)
    assert len(UPWARD) <= MAX_UPWARD
    stale = UPWARD - set(upward)
    assert not stale, f"UPWARD lists imports that are gone: {sorted(stale)}"


@pytest.mark.parametrize("importer, imported", sorted(UPWARD))
def test_each_upward_import_says_why(importer, imported):
    lines = MODULES[importer].read_text(encoding="utf-8").splitlines()
    for target, line in GRAPH[importer]:
        if target == imported:
            above = " ".join(lines[max(0, line - 4):line - 1])
            assert "# UP (" in above, f"{importer}:{line} imports {imported} without a comment"


def test_no_import_loop():
    assert not import_loops(GRAPH), f"import loops: {import_loops(GRAPH)}"


def test_the_checks_catch_an_upward_import_and_a_loop():
    """The checks can fail: the core importing the facade inside a function is up and a loop."""
    graph = {"xprune_nb.core.errors": [("xprune_nb.study.facade", 7)],
             "xprune_nb.study.facade": [("xprune_nb.core.errors", 1)]}
    assert upward_imports(graph) == {("xprune_nb.core.errors", "xprune_nb.study.facade"): 7}
    assert import_loops(graph) == [["xprune_nb.core.errors", "xprune_nb.study.facade"]]
    assert not upward_imports({"xprune_nb.study.facade": [("xprune_nb.core.errors", 1)]})


def test_the_top_level_is_small():
    entries = sorted(p.name for p in PACKAGE.iterdir()
                     if p.name != "__pycache__" and not p.name.startswith("."))
    assert len(entries) <= MAX_TOP_LEVEL, entries


def test_old_public_paths_still_import():
    import importlib

    import xprune_nb
    from xprune_nb.core.moved import MOVED

    for old, new in MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new), old
    assert xprune_nb.errors.ConfigError is xprune_nb.core.errors.ConfigError
    from xprune_nb.distributed import broadcast_study  # noqa: F401
    from xprune_nb.zoo import load  # noqa: F401


def test_old_module_attributes_of_the_package_resolve_in_a_fresh_process():
    """``xp.errors.ConfigError`` worked before the move because the root imported the module;
    it must not depend on another import having set the attribute first."""
    import subprocess
    import sys

    code = ("import xprune_nb as xp; "
            "assert xp.errors.ConfigError is xp.ConfigError; "
            "assert xp.params.check and xp.progress.make_progress; "
            "assert xp.distributed.broadcast_study")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr
