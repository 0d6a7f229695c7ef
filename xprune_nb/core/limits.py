"""Bounds on structured data read from files (recipes, contracts): size, nesting, aliases.

A YAML file of one kilobyte can describe a billion values ("billion laughs": each anchor a
list of ten aliases of the one before), and a deeply nested file makes recursive readers
raise ``RecursionError``. Both are refused here before anything walks the data:

* :func:`load_yaml` reads YAML with PyYAML's safe loader after one linear pass over the
  parser's events that measures the nesting depth and the size of the document *with every
  alias expanded* (an alias counts as large as the node it names) and refuses recursive
  aliases;
* :func:`check_size` bounds plain data already in memory (a parsed JSON file, a dict a user
  passes) with an explicit stack, counting shared objects every time they are reached and so
  ending on cycles too.

Examples
--------
>>> load_yaml("steps: [{score: {criterion: magnitude}}]", call="demo")
{'steps': [{'score': {'criterion': 'magnitude'}}]}
>>> laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\\n" + "".join(
...     f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\\n" for p, c in zip("abcdefgh", "bcdefghi"))
>>> load_yaml(laughs, call="demo")
Traceback (most recent call last):
...
xprune_nb.core.errors.ConfigError: demo(path=...): the document holds more than 100000 values ...
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

__all__ = ["MAX_NODES", "MAX_DEPTH", "MAX_BYTES", "load_yaml", "load_json", "check_size"]

#: values a recipe-like document may hold, aliases expanded (a real recipe holds hundreds)
MAX_NODES = 100_000
#: nesting levels (a real recipe nests four or five)
MAX_DEPTH = 64
#: bytes of a recipe-like text file
MAX_BYTES = 16 << 20


def _too_big(call: str, param: str, what: str) -> ConfigError:
    return ConfigError(f"{call}({param}=...): {what}; no document a person writes looks "
                       "like this (e.g. a YAML 'billion laughs' of nested aliases), so it is "
                       "refused before it is read.")


def load_yaml(text: str, *, call: str, param: str = "path") -> Any:
    """``yaml.safe_load(text)``, after checking its depth and expanded size (see module doc).

    Malformed YAML raises ``yaml.YAMLError`` for the caller to word.
    """
    import yaml

    if len(text) > MAX_BYTES:
        raise _too_big(call, param, f"the text is longer than {MAX_BYTES} characters")
    sizes: dict[str, int] = {}
    stack: list[list] = []   # per open collection: [anchor, size so far]
    total = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:   # an alias of an open collection: a cycle
                raise _too_big(call, param, f"the alias *{event.anchor} refers to a value "
                                            "that contains it (a recursive document)")
            grown = sizes[event.anchor]
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            stack.append([event.anchor, 1])
            if len(stack) > MAX_DEPTH:
                raise _too_big(call, param, f"values are nested more than {MAX_DEPTH} levels "
                                            "deep")
            continue
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, grown = stack.pop()
            if anchor is not None:
                sizes[anchor] = grown
        elif isinstance(event, yaml.ScalarEvent):
            grown = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        else:
            continue
        if stack:
            stack[-1][1] += grown
        else:
            total += grown
        if total + sum(size for _, size in stack) > MAX_NODES:
            raise _too_big(call, param, f"the document holds more than {MAX_NODES} values "
                                        "once its aliases are expanded")
    return yaml.safe_load(text)


def load_json(text: str, *, call: str, param: str = "path") -> Any:
    """``json.loads(text)`` with the same bounds as :func:`load_yaml` (JSON has no aliases;
    deep nesting would raise ``RecursionError`` in the decoder). Malformed JSON raises
    ``ValueError`` for the caller to word."""
    import json

    if len(text) > MAX_BYTES:
        raise _too_big(call, param, f"the text is longer than {MAX_BYTES} characters")
    try:
        value = json.loads(text)
    except RecursionError:   # the decoder recurses once per level
        raise _too_big(call, param, "values are nested too deeply") from None
    check_size(value, call=call, param=param)
    return value


def check_size(value: Any, *, call: str, param: str) -> None:
    """Refuse plain data with more than :data:`MAX_NODES` values (each reached shared object
    counted again) or nested more than :data:`MAX_DEPTH` levels; a cyclic structure is
    refused as too deep. Iterative: never raises ``RecursionError``."""
    stack = [(value, 0)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise _too_big(call, param, f"it holds more than {MAX_NODES} values (shared "
                                        "values counted each time they appear)")
        if depth > MAX_DEPTH:
            raise _too_big(call, param, f"values are nested more than {MAX_DEPTH} levels "
                                        "deep (or contain themselves)")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
            seen += len(item)   # the keys
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)
