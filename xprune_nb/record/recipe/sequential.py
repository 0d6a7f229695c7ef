"""Rebuild code for models made of ``torch.nn`` layers only (``nn.Sequential`` built in a cell).

Students and teachers often write ``model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), ...)``
in a notebook: there is no class to import or capture. Such a model is fully described by its
layers' constructor arguments, which torch prints in each layer's ``repr``. We parse each repr
and accept it only when it is a call of that very ``torch.nn`` class with literal arguments
(numbers, booleans, strings, tuples); the code we write is rebuilt from those parsed literals, so
no text from the model is pasted as code. The result is checked by building it and comparing every
tensor's shape with the original.
"""

from __future__ import annotations

import ast
from collections import OrderedDict

from torch import nn

from .source import CapturedSource

__all__ = ["sequential_source"]

CLASS_NAME = "RebuiltSequential"


_WIDTH = 99


def _layer_parts(module: nn.Module) -> list[str] | None:
    """The literal arguments of a torch.nn leaf layer, or None if it cannot be rebuilt."""
    cls = type(module)
    if getattr(nn, cls.__name__, None) is not cls or any(True for _ in module.children()):
        return None
    try:
        node = ast.parse(repr(module), mode="eval").body
    except SyntaxError:
        return None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == cls.__name__):
        return None
    parts = []
    for arg in node.args:
        try:
            ast.literal_eval(arg)
        except ValueError:
            return None
        parts.append(ast.unparse(arg))
    for kw in node.keywords:
        if kw.arg is None or not kw.arg.isidentifier():
            return None
        try:
            ast.literal_eval(kw.value)
        except ValueError:
            return None
        parts.append(f"{kw.arg}={ast.unparse(kw.value)}")
    return parts


def _call(func: str, parts: list[str], indent: str, prefix: str = "") -> str:
    """``func(parts)`` on one line when it fits after ``indent + prefix``, else one part per
    line. The first line carries no indent (the caller places it)."""
    one = f"{func}({', '.join(parts)})"
    if len(indent) + len(prefix) + len(one) + 1 <= _WIDTH:
        return one
    inner = indent + "    "
    return f"{func}(\n" + "".join(f"{inner}{p},\n" for p in parts) + f"{indent})"


def _expr(module: nn.Module, indent: str, prefix: str = "") -> str | None:
    """Code that builds ``module``, starting on a line indented by ``indent``."""
    if type(module) is nn.Sequential:
        args = _sequential_args(module, indent + "    ")
        return None if args is None else f"nn.Sequential(\n{args}\n{indent})"
    parts = _layer_parts(module)
    return None if parts is None else _call(f"nn.{type(module).__name__}", parts, indent, prefix)


def _sequential_args(seq: nn.Sequential, indent: str) -> str | None:
    """The arguments of ``nn.Sequential(...)``, one per line, each indented by ``indent``."""
    children = list(seq.named_children())
    if [name for name, _ in children] == [str(i) for i in range(len(children))]:
        lines = []
        for _, child in children:
            code = _expr(child, indent)
            if code is None:
                return None
            lines.append(f"{indent}{code},")
        return "\n".join(lines)
    # named children: an OrderedDict whose names are string literals (repr, never code)
    inner = indent + "    "
    lines = [f"{indent}OrderedDict(["]
    for name, child in children:
        prefix = f"({name!r}, "
        code = _expr(child, inner, prefix)
        if code is None:
            return None
        lines.append(f"{inner}{prefix}{code}),")
    lines.append(f"{indent}]),")
    return "\n".join(lines)


def sequential_source(model: nn.Module) -> CapturedSource | None:
    """Source of a class that rebuilds ``model`` (an ``nn.Sequential`` of torch.nn layers), or
    None when it is not one or the rebuilt architecture would differ.

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> print(sequential_source(model).definitions[0])  # doctest: +NORMALIZE_WHITESPACE
    class RebuiltSequential(nn.Sequential):
        \"\"\"The study's nn.Sequential, rebuilt from its layers' arguments.\"\"\"
    <BLANKLINE>
        def __init__(self):
            super().__init__(
                nn.Linear(in_features=4, out_features=8, bias=True),
                nn.ReLU(),
                nn.Linear(in_features=8, out_features=2, bias=True),
            )
    """
    if type(model) is not nn.Sequential:
        return None
    args = _sequential_args(model, "            ")
    if args is None:
        return None
    definition = (
        f"class {CLASS_NAME}(nn.Sequential):\n"
        '    """The study\'s nn.Sequential, rebuilt from its layers\' arguments."""\n\n'
        "    def __init__(self):\n"
        "        super().__init__(\n"
        f"{args}\n"
        "        )\n"
    )
    imports = [("torch", "nn", "nn")]
    if "OrderedDict(" in args:
        imports.insert(0, ("collections", "OrderedDict", "OrderedDict"))
    captured = CapturedSource(CLASS_NAME, definitions=[definition], imports=imports)
    # the code is built from parsed literals only; building it here checks that it rebuilds the
    # very architecture (same tensor names and shapes)
    namespace = {"nn": nn, "OrderedDict": OrderedDict}
    exec(compile(definition, "<xprune_nb sequential>", "exec"), namespace)  # noqa: S102
    rebuilt = namespace[CLASS_NAME]()
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    return captured if want == got else None
