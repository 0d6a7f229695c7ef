"""Griffe extension for the API reference (mkdocstrings): show facade methods as methods.

``Study.sensitivity = delegate("xprune_nb.pruning.sensitivity:sensitivity")`` is, at runtime, a
method with the service's signature minus ``study`` (see ``xprune_nb/study/delegate.py``). Static
analysis sees only an attribute assignment, so the reference would miss it. This extension
replaces each such attribute with a copy of the service function: same docstring and
parameters, without the leading ``study``, plus one line that names the service.

It also gives ``name = property(lambda self: ..., doc="...")`` attributes their ``doc`` text,
and turns the reStructuredText the docstrings use into Markdown: roles such as
``:func:`~xprune_nb.explain.compare_saliency``` become code spans, and simple tables (rows
between ``====  ====`` rules) become Markdown tables.
"""

from __future__ import annotations

import re

import griffe

# a `study : Study` entry (and its indented description) in a NumPy Parameters section
_STUDY_PARAM = re.compile(r"^study(\s*:[^\n]*)?\n(?:[ \t]+[^\n]*\n|[ \t]*\n(?=[ \t]+\S))*",
                          re.MULTILINE)


_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")
_RULE = re.compile(r"^(\s*)(=+)((?:\s+=+)+)\s*$")


def _role(match: re.Match) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _columns(rule: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"=+", rule)]


def _cells(line: str, spans: list[tuple[int, int]]) -> list[str]:
    # the last column runs to the end of the line (RST lets it overflow its rule)
    ends = [start for start, _ in spans[1:]] + [len(line)]
    return [line[start:end].strip() for (start, _), end in zip(spans, ends)]


def _table(lines: list[str], spans: list[tuple[int, int]], indent: str) -> list[str]:
    """An RST simple table (header, rule, rows; a row with an empty first cell continues the
    row above) as a Markdown table."""
    rows: list[list[str]] = []
    for line in lines:
        if _RULE.match(line) or not line.strip():
            continue
        cells = _cells(line, spans)
        if rows and not cells[0]:
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells)]
        else:
            rows.append(cells)
    if not rows:
        return []
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(spans)]
    out += ["| " + " | ".join(cells) + " |" for cells in rows[1:]]
    return [indent + row for row in out]


def markdown(text: str) -> str:
    """Docstring text with RST roles and simple tables in Markdown."""
    text = _ROLE.sub(_role, text)
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        rule = _RULE.match(lines[i])
        # a table: top rule, header, rule, rows, bottom rule (three rules of the same shape)
        ends = [j for j in range(i + 1, len(lines)) if lines[j].strip() == lines[i].strip()]
        if rule and len(ends) >= 2:
            end = ends[1]
            out += _table(lines[i + 1:end], _columns(lines[i]), rule.group(1))
            i = end + 1
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


def _objects(obj):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


def _call_name(value) -> str | None:
    function = getattr(value, "function", None)
    return getattr(function, "name", None) if function is not None else None


def _string_argument(value) -> str | None:
    args = getattr(value, "arguments", [])
    if len(args) == 1 and isinstance(args[0], str) and args[0][:1] in "'\"":
        return args[0][1:-1]
    return None


def _service_doc(target: griffe.Function, owner: str, name: str) -> str:
    text = target.docstring.value if target.docstring else ""
    text = _STUDY_PARAM.sub("", text)
    summary, sep, rest = text.partition("\n\n")
    note = (f"A method of `{owner}`: `{owner.lower()}.{name}(...)` calls "
            f"[`{target.path}`][{target.path}] with the study as first argument.")
    return f"{summary}\n\n{note}{sep}{rest}"


def _as_method(attr: griffe.Attribute, target: griffe.Function) -> griffe.Function:
    params = list(target.parameters)
    if params and params[0].name == "study":
        params = params[1:]
    func = griffe.Function(attr.name, lineno=attr.lineno, endlineno=attr.endlineno,
                           parameters=griffe.Parameters(*params), returns=target.returns)
    if target.docstring is not None:
        func.docstring = griffe.Docstring(
            _service_doc(target, attr.parent.name, attr.name), lineno=attr.lineno,
            parser=target.docstring.parser, parser_options=target.docstring.parser_options,
            parent=func)
    return func


class FacadeMethods(griffe.Extension):
    """Turn ``delegate(...)`` attributes into methods and ``property(doc=...)`` into
    documented properties, once the whole package is loaded (the services live in other
    modules)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        for cls in self._classes(pkg):
            for name, member in list(cls.members.items()):
                if member.is_alias or not member.is_attribute:
                    continue
                call = _call_name(member.value)
                if call == "delegate" and (path := _string_argument(member.value)):
                    target = loader.modules_collection.get_member(path.replace(":", "."))
                    if target is None or not target.is_function:
                        raise ValueError(f"{cls.path}.{name}: delegate target {path!r} "
                                         "is not a function of the package")
                    cls.set_member(name, _as_method(member, target))
                elif call == "property" and member.docstring is None:
                    for arg in member.value.arguments:
                        if isinstance(arg, griffe.ExprKeyword) and arg.name == "doc":
                            doc = str(arg.value).strip("'\"")
                            member.docstring = griffe.Docstring(doc, parent=member)
                            member.labels.add("property")

        for obj in _objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = markdown(obj.docstring.value)

    def _classes(self, module: griffe.Module):
        for member in module.members.values():
            if member.is_alias:
                continue
            if member.is_module:
                yield from self._classes(member)
            elif member.is_class:
                yield member
