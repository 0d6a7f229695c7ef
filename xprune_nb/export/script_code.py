"""Python source that is safe to write into an exported script: literals, identifiers, calls.

No user string is ever pasted as code: values are written with ``repr()`` and checked to read
back as the same literal (``ast.literal_eval``), keyword names must be Python identifiers
that are not keywords, and calls are wrapped to the script's line width. The one deliberate
exception (a notebook's model class, carried verbatim) has its imports hoisted and its names
checked against those the script defines itself.

Examples
--------
>>> print(_lit({"name": "x); import os  #"}, "name"))
{'name': 'x); import os  #'}
>>> _call("f", ["x=1", "y='two'"], "")
["f(x=1, y='two')"]
"""

from __future__ import annotations

import ast
import keyword
import re

from ..core.errors import ConfigError

_CALL = "Study.export_script"
#: the script's line width (black's default)
_WIDTH = 88
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def _lit(value, where: str) -> str:
    """``repr(value)``, checked to be a plain literal that reads back as ``value``."""
    text = repr(value)
    try:
        ok = ast.literal_eval(text) == value
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        ok = False
    if not ok:
        raise ConfigError.bad_value(_CALL, where, "a plain value (number, string, bool, None, "
                                    "list or dict of those)", value)
    return text


def _ident(name, where: str) -> str:
    if not (isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)):
        raise ConfigError.bad_value(_CALL, where, "a Python identifier", name)
    return name


def _call(head: str, args: list[str], indent: str) -> list[str]:
    """``head(args...)`` on one line, or wrapped with one argument list per line block."""
    one = f"{indent}{head}({', '.join(args)})"
    if len(one) <= _WIDTH:
        return [one]
    lines, line, inner = [f"{indent}{head}("], "", indent + "    "
    for arg in args:
        piece = arg + ","
        if "\n" in arg or len(inner) + len(line) + len(piece) + 1 > _WIDTH:
            if line:
                lines.append(inner + line)
            line = ""
            if "\n" in arg or len(inner) + len(piece) > _WIDTH:
                lines.append(inner + piece.replace("\n", "\n" + inner))
                continue
        line = f"{line} {piece}" if line else piece
    if line:
        lines.append(inner + line)
    lines.append(f"{indent})")
    return lines


def _kwargs(params: dict, where: str, skip=()) -> list[str]:
    import pprint

    out = []
    for key, value in params.items():
        if key in skip:
            continue
        text = _lit(value, f"{where}.{key}")
        if len(text) > 60 and isinstance(value, (dict, list)):
            text = pprint.pformat(value, width=_WIDTH - 16, sort_dicts=False)
        out.append(f"{_ident(key, where)}={text}")
    return out


def _shown(name: str) -> str:
    return name if _SAFE_NAME.fullmatch(name) else repr(name)


def _import(path: str, alias: str) -> tuple[str, str]:
    """``from module import first as alias`` and the expression naming the object."""
    module, attr = path.split(":")
    first, *rest = attr.split(".")
    for part in module.split(".") + attr.split("."):
        _ident(part, "factory")
    return f"from {module} import {first} as {alias}", ".".join([alias, *rest])


def _defined_names(source: str) -> set[str]:
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def _split_imports(source: str) -> tuple[list[str], str]:
    """The leading import statements of ``source`` (re-written from the syntax tree, so only
    identifiers) and the rest of the text, verbatim."""
    tree = ast.parse(source)
    hoisted, end = [], 0
    for node in tree.body:
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or getattr(node, "level", 0):
            break
        hoisted += [ast.unparse(type(node)(**{**node.__dict__, "names": [a]}))
                    for a in node.names]
        end = node.end_lineno
    return hoisted, "\n".join(source.splitlines()[end:])


def _sorted_block(lines: list[str]) -> list[str]:
    """Import lines grouped and ordered as isort (and ruff's ``I`` rules) want them: standard
    library, third party, then xprune_nb; ``import x`` before ``from x import y``."""
    import sys

    def module(line: str) -> str:
        return line.split()[1]

    def section(line: str) -> int:
        top = module(line).split(".")[0]
        return 0 if top in sys.stdlib_module_names else 2 if top == "xprune_nb" else 1

    out: list[str] = []
    for sec in range(3):
        block = sorted({ln for ln in lines if section(ln) == sec},
                       key=lambda ln: (ln.startswith("from "), module(ln).lower(), ln))
        if block:
            out += ([""] if out else []) + block
    return out
