"""Capture the source code of a model class defined in a notebook, so a script can carry it.

``inspect.getsource`` finds a class through its module's file; a notebook's ``__main__`` has none
on Python < 3.13, so we fall back to the cells themselves: IPython keeps every cell in
``linecache`` (under the file name its code objects carry) and in the ``In`` history.

Besides the class we capture what its code needs from the notebook: its base classes and the
classes of its submodules defined there, the notebook functions and plain constants it uses, and
the imports of the modules and names it reads (``nn``, ``F``, ``math``...).
"""

from __future__ import annotations

import ast
import builtins
import inspect
import keyword
import linecache
import sys
import textwrap
import types
from dataclasses import dataclass, field

from torch import nn

from ...core.errors import ConfigError

__all__ = ["CapturedSource", "capture_model_source", "is_importable"]

_CALL = "Study.recipe"


@dataclass
class CapturedSource:
    """Source text of the notebook definitions and the imports they need."""

    class_name: str
    definitions: list[str] = field(default_factory=list)
    imports: list[tuple[str, str | None, str]] = field(default_factory=list)
    constants: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        """All of it as one module: imports, constants, then definitions."""
        lines = [_import_line(*imp) for imp in self.imports]
        lines += [f"{name} = {value}" for name, value in self.constants.items()]
        head = "\n".join(lines)
        body = "\n\n\n".join(d.strip("\n") for d in self.definitions)
        return (head + "\n\n\n" if head else "") + body + "\n"


def _import_line(module: str, name: str | None, alias: str) -> str:
    if name is None:
        return f"import {module}" if alias == module else f"import {module} as {alias}"
    return (f"from {module} import {name}" if alias == name
            else f"from {module} import {name} as {alias}")


def is_importable(obj) -> bool:
    """True when ``module.qualname`` of ``obj`` imports back to the very same object."""
    module = getattr(obj, "__module__", None)
    if not module or module == "__main__" or "<locals>" in getattr(obj, "__qualname__", "<"):
        return False
    try:
        target = __import__(module, fromlist=["_"])
        for part in obj.__qualname__.split("."):
            target = getattr(target, part)
    except Exception:  # noqa: BLE001 - anything failing means "not importable"
        return False
    return target is obj


def _cell_sources(module: types.ModuleType) -> list[str]:
    """Every IPython cell run so far (newest first), when ``module`` is a notebook."""
    cells = getattr(module, "In", None) or getattr(module, "_ih", None) or []
    return [c for c in reversed(list(cells)) if isinstance(c, str)]


def _find_def(text: str, name: str, line: int | None = None) -> str | None:
    """Source of the top-level class/function ``name`` in ``text`` (containing ``line``)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            if line is None or start <= line <= node.end_lineno:
                return "\n".join(text.splitlines()[start - 1:node.end_lineno])
    return None


def _definition_source(obj) -> str:
    """Source of a class or function, also when it was defined in a notebook cell."""
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        pass
    codes = [obj.__code__] if isinstance(obj, types.FunctionType) else [
        v.__code__ for v in vars(obj).values() if isinstance(v, types.FunctionType)]
    for code in codes:
        text = "".join(linecache.getlines(code.co_filename))
        found = text and _find_def(text, obj.__name__, code.co_firstlineno)
        if found:
            return found
    for cell in _cell_sources(sys.modules.get(obj.__module__)):
        found = _find_def(cell, obj.__name__)
        if found:
            return found
    raise ConfigError(
        f"{_CALL}: cannot find the source code of {obj.__qualname__} (defined in "
        f"{obj.__module__}); define it in a notebook cell or a file, or pass "
        "model={'factory': 'package.module:callable'}."
    )


def _free_names(tree: ast.AST) -> list[str]:
    """Names read by the code that it does not define itself, in order of appearance."""
    defined, used = set(), []
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            defined.add(node.name)
            args = node.args if not isinstance(node, ast.ClassDef) else None
            if args is not None:
                for a in args.posonlyargs + args.args + args.kwonlyargs + [
                        args.vararg, args.kwarg]:
                    if a is not None:
                        defined.add(a.arg)
        elif isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                used.append(node.id)
            else:
                defined.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            defined.add(node.name)
        elif isinstance(node, ast.comprehension):
            defined.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
    seen, out = set(), []
    for name in used:
        if name not in defined and name not in seen and not hasattr(builtins, name):
            seen.add(name)
            out.append(name)
    return out


def _dotted(name: str) -> bool:
    return all(p.isidentifier() and not keyword.iskeyword(p) for p in name.split("."))


def _literal(value) -> str | None:
    if isinstance(value, (bool, int, float, str, type(None), tuple)):
        text = repr(value)
        try:
            if ast.literal_eval(text) == value:
                return text
        except (ValueError, SyntaxError):
            pass
    return None


def capture_model_source(model: nn.Module) -> CapturedSource:
    """Capture the notebook definitions ``model`` needs, starting from its class.

    Examples
    --------
    >>> from torch import nn
    >>> captured = capture_model_source(nn.Linear(2, 2))  # an importable class: nothing to do
    >>> captured.definitions
    []
    """
    root = type(model)
    captured = CapturedSource(class_name=root.__name__)
    if is_importable(root):
        return captured
    home = sys.modules.get(root.__module__)
    namespace = vars(home) if home is not None else {}
    # classes to capture: the model's own, its submodules' and their bases, from the notebook
    pending = [type(m) for m in model.modules()]
    todo: list = []
    while pending:
        obj = pending.pop(0)
        if obj in todo or is_importable(obj) or obj.__module__ != root.__module__:
            continue
        todo.append(obj)
        if isinstance(obj, type):
            pending += [b for b in obj.__bases__ if b is not object]
    sources: dict[object, str] = {}
    imports: list[tuple[str, str | None, str]] = []
    i = 0
    while i < len(todo):
        obj = todo[i]
        i += 1
        if "." in obj.__qualname__:
            raise ConfigError(f"{_CALL}: {obj.__qualname__} is nested in another definition; "
                              "define it at the top level of a cell to export it.")
        text = _definition_source(obj)
        sources[obj] = text
        for name in _free_names(ast.parse(text)):
            if name in captured.constants or any(a == name for *_, a in imports):
                continue
            if name not in namespace:
                continue  # e.g. a name only used under a branch never taken; let it be
            value = namespace[name]
            if isinstance(value, types.ModuleType) and _dotted(value.__name__):
                parent, _, last = value.__name__.rpartition(".")
                # `from torch import nn` rather than `import torch.nn as nn` (ruff PLR0402)
                imports.append((parent, last, name) if parent and last == name
                               else (value.__name__, None, name))
            elif isinstance(value, (type, types.FunctionType)) and is_importable(value):
                if not _dotted(value.__module__) or "." in value.__qualname__:
                    raise ConfigError(f"{_CALL}: cannot import {name!r} used by the model.")
                imports.append((value.__module__, value.__qualname__, name))
            elif isinstance(value, (type, types.FunctionType)) and value.__name__ == name:
                if value not in todo:
                    todo.append(value)
            elif _literal(value) is not None:
                captured.constants[name] = _literal(value)
            else:
                raise ConfigError(
                    f"{_CALL}: the model's code uses the notebook variable {name!r} "
                    f"({type(value).__name__}), which cannot be written into a script; make "
                    "it a constructor argument or a constant."
                )
    # base classes before subclasses; otherwise what a definition uses comes before it (the
    # reverse of the order we discovered them in), as class bodies may use it at definition
    ordered: list = []

    def visit(obj) -> None:
        if obj in ordered:
            return
        for base in getattr(obj, "__bases__", ()):
            if base in sources:
                visit(base)
        ordered.append(obj)

    for obj in reversed(todo):
        visit(obj)
    captured.definitions = [sources[o] for o in ordered]
    captured.imports = _sorted_imports(imports)
    return captured


def _sorted_imports(imports):
    # plain `import x` lines before `from x import y` lines, each sorted by module (isort's way)
    return sorted(set(imports), key=lambda t: (t[1] is not None, t[0].lower(), t[1] or "",
                                               t[2]))
