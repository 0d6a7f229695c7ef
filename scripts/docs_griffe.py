"""Griffe extension for the API reference (mkdocstrings): show facade methods as methods.

``Study.sensitivity = delegate("xprune_nb.pruning.sensitivity:sensitivity")`` is, at runtime, a
method with the service's signature minus ``study`` (see ``xprune_nb/_facade.py``). Static
analysis sees only an attribute assignment, so the reference would miss it. This extension
replaces each such attribute with a copy of the service function: same docstring and
parameters, without the leading ``study``, plus one line that names the service.

It also gives ``name = property(lambda self: ..., doc="...")`` attributes their ``doc`` text.
"""

from __future__ import annotations

import re

import griffe

# a `study : Study` entry (and its indented description) in a NumPy Parameters section
_STUDY_PARAM = re.compile(r"^study(\s*:[^\n]*)?\n(?:[ \t]+[^\n]*\n|[ \t]*\n(?=[ \t]+\S))*",
                          re.MULTILINE)


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

    def _classes(self, module: griffe.Module):
        for member in module.members.values():
            if member.is_alias:
                continue
            if member.is_module:
                yield from self._classes(member)
            elif member.is_class:
                yield member
