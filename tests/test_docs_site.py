"""The docs site covers the public API: every name in ``xprune_nb.__all__``, every public
``Study`` method (the ``delegate`` facade ones included) and every docs page.

These checks read the reference pages and mkdocs.yml; they do not build the site (``make docs``
does, strictly, in CI). The examples written on the reference pages run in a slow test.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

import pytest
import yaml

import xprune_nb as xp
from xprune_nb.study.delegate import delegate

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
DIRECTIVE = re.compile(r"^:::\s+([\w.]+)\s*$", re.MULTILINE)
CODE_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def identifiers(page: Path | None = None) -> list[str]:
    """The ``::: xprune_nb...`` identifiers of one reference page, or of all of them."""
    pages = [page] if page else sorted(REFERENCE.glob("*.md"))
    return [m for p in pages for m in DIRECTIVE.findall(p.read_text(encoding="utf-8"))]


def resolve(identifier: str):
    """The object an identifier names (a module, or an attribute of the longest module)."""
    parts = identifier.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(identifier)


def documented_objects() -> list:
    """Objects the reference renders: each identifier's, and a module's ``__all__`` members
    (mkdocstrings renders those)."""
    found = []
    for identifier in identifiers():
        obj = resolve(identifier)
        found.append(obj)
        if inspect.ismodule(obj):
            found.extend(getattr(obj, name) for name in getattr(obj, "__all__", ()))
    return found


def test_every_directive_names_a_real_object():
    assert identifiers(), "no ::: directives in docs/reference"
    for identifier in identifiers():
        assert identifier.startswith("xprune_nb"), identifier
        resolve(identifier)   # raises when a page names something that is gone


@pytest.mark.parametrize("name", [n for n in xp.__all__ if n != "__version__"])
def test_public_name_is_in_the_reference(name):
    obj = getattr(xp, name)
    assert any(obj is o for o in documented_objects()), (
        f"xprune_nb.{name} is not rendered by any ::: directive in docs/reference/*.md")


def public_study_members() -> list[str]:
    return sorted(n for n, v in vars(xp.Study).items()
                  if not n.startswith("_") and (callable(v) or isinstance(
                      v, (property, classmethod, staticmethod, delegate))))


def test_study_page_renders_the_whole_class():
    text = (REFERENCE / "study.md").read_text(encoding="utf-8")
    block = text.split("::: xprune_nb.Study", 1)
    assert len(block) == 2, "study.md has no ::: xprune_nb.Study"
    # a `members:` list would leave out any method added later
    assert "members:" not in block[1].split(":::", 1)[0]


def test_every_study_method_is_rendered_with_a_docstring():
    """Load the package as mkdocstrings does (griffe, with the docs' extension) and check that
    each public Study method is a documented member, the delegate ones as methods without
    their ``study`` parameter."""
    griffe = pytest.importorskip("griffe")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from docs_griffe import FacadeMethods
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    loader = griffe.GriffeLoader(docstring_parser="numpy",
                                 extensions=griffe.load_extensions(FacadeMethods()),
                                 search_paths=[str(ROOT)])
    study = loader.load("xprune_nb")["study.facade.Study"]
    names = public_study_members()
    assert {"score", "prune", "retrain", "why", "sensitivity", "export_script"} <= set(names)
    for name in names:
        member = study.members.get(name)
        assert member is not None, f"Study.{name} is missing from the reference"
        assert member.docstring is not None and member.docstring.value.strip(), (
            f"Study.{name} renders without a docstring")
        if isinstance(vars(xp.Study)[name], delegate):
            assert member.is_function, f"Study.{name} renders as an attribute, not a method"
            assert "study" not in [p.name for p in member.parameters], name


def test_every_delegate_service_is_on_the_services_page():
    on_page = set(identifiers(REFERENCE / "services.md"))
    for name, value in vars(xp.Study).items():
        if isinstance(value, delegate):
            assert value.path.replace(":", ".") in on_page, (
                f"Study.{name} delegates to {value.path}, which docs/reference/services.md "
                "does not document")


def nav_pages(nav) -> list[str]:
    pages = []
    for item in nav:
        if isinstance(item, str):
            pages.append(item)
        elif isinstance(item, dict):
            for value in item.values():
                pages.extend(nav_pages(value) if isinstance(value, list) else [value])
    return pages


def test_nav_lists_every_docs_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = set(nav_pages(config["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - listed == set(), "add these docs pages to the nav in mkdocs.yml"
    assert listed - pages == set(), "the nav names pages that do not exist"
    assert config["strict"] is True
    jupyter = next(p["mkdocs-jupyter"] for p in config["plugins"]
                   if isinstance(p, dict) and "mkdocs-jupyter" in p)
    assert jupyter["execute"] is False


def test_notebooks_hook_finds_the_notebooks_but_not_the_solutions():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from docs_hooks import notebook_paths
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    found = [p.relative_to(ROOT).as_posix() for p in notebook_paths()]
    assert "notebooks/01_quickstart.ipynb" in found
    assert any(p.startswith("notebooks/classroom/") for p in found)
    assert not any("solutions" in p for p in found)


@pytest.mark.parametrize("name", [n for n in xp.__all__ if n != "__version__"])
def test_public_name_has_an_example(name):
    """A ``>>>`` example in the object's docstring or its module's, or a code block on the
    reference page that renders it."""
    obj = getattr(xp, name)
    docs = [inspect.getdoc(obj) or ""]
    module = obj if inspect.ismodule(obj) else sys.modules.get(getattr(obj, "__module__", ""))
    docs.append(inspect.getdoc(module) or "" if module else "")
    for page in sorted(REFERENCE.glob("*.md")):
        if any(o is obj for i in identifiers(page) for o in _rendered(i)):
            docs.append(page.read_text(encoding="utf-8"))
    assert any(">>>" in d or "```python" in d for d in docs), f"xprune_nb.{name} has no example"


def _rendered(identifier: str) -> list:
    obj = resolve(identifier)
    if inspect.ismodule(obj):
        return [obj, *(getattr(obj, n) for n in getattr(obj, "__all__", ()))]
    return [obj]


@pytest.mark.slow
@pytest.mark.parametrize("page", ["index.md", "reference/study.md", "reference/results.md",
                                  "reference/training.md"])
def test_page_examples_run(page, tmp_path, monkeypatch):
    """The complete scripts on the landing page and at the top of the reference pages run as
    written (in a temporary folder: the quick start saves a study file)."""
    monkeypatch.chdir(tmp_path)
    blocks = CODE_BLOCK.findall((DOCS / page).read_text(encoding="utf-8"))
    assert blocks, f"{page} has no python example"
    for code in blocks:
        exec(compile(code, f"docs/{page}", "exec"), {"__name__": "__docs__"})


def test_notebooks_are_shown_executed_and_cached(tmp_path, monkeypatch):
    """The site's notebooks carry their outputs: the hook runs each one into build/ and reuses
    the copy while neither the notebook nor the package changed."""
    import nbformat

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import docs_hooks
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    notebooks = tmp_path / "notebooks"
    (notebooks / "data").mkdir(parents=True)
    (notebooks / "data" / "n.txt").write_text("21")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "print(int(open('data/n.txt').read()) * 2)")])
    nbformat.write(nb, notebooks / "tiny.ipynb")
    monkeypatch.setattr(docs_hooks, "NOTEBOOKS", notebooks)
    monkeypatch.setattr(docs_hooks, "EXECUTED", tmp_path / "build")
    out = docs_hooks.executed_copy(notebooks / "tiny.ipynb", "h1")
    run = nbformat.read(out, as_version=4)
    assert run.cells[0].outputs[0]["text"] == "42\n"
    stamp = out.stat().st_mtime_ns
    assert docs_hooks.executed_copy(notebooks / "tiny.ipynb", "h1").stat().st_mtime_ns == stamp
    assert (notebooks / "tiny.ipynb").read_text().count('"outputs": []') == 1   # source untouched
