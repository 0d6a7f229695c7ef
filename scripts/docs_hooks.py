"""mkdocs hook: publish the notebooks under ``notebooks/`` as pages without copying them.

mkdocs only sees files inside ``docs/``; a symlink would break on Windows checkouts and a copy
would go stale, so each notebook is added to the build as a virtual file that points at the real
one (``notebooks/classroom/01_prune_half.ipynb`` → page ``notebooks/classroom/01_prune_half/``).
Teacher solutions stay out of the site.

The site shows the notebooks **with their outputs** (plots, tables, panels' static views): the
hook executes each one with nbclient into ``build/docs-notebooks/`` and the page is made from
that copy (mkdocs-jupyter itself runs with ``execute: false``). An executed copy is reused while
the notebook and the package's source are unchanged (a content hash), so a rebuild costs nothing;
a notebook that fails to run fails the build. ``XPRUNE_DOCS_EXECUTE=0`` shows the notebooks as
saved (no outputs), e.g. for a quick look at the prose.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
# the solutions would hand students the answers
PATTERNS = ("*.ipynb", "classroom/*.ipynb")
EXECUTED = ROOT / "build" / "docs-notebooks"
#: seconds one notebook may run (the slowest runs in about 90 s on a busy 2-core machine)
TIMEOUT = 600


def _source_hash() -> str:
    """What an executed copy depends on besides the notebook: the package's code and data."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "xprune_nb").rglob("*")):
        if path.is_file() and path.suffix in (".py", ".pt", ".npz", ".json", ".csv"):
            digest.update(path.relative_to(ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    for path in sorted((NOTEBOOKS / "data").rglob("*")) if (NOTEBOOKS / "data").is_dir() else []:
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def executed_copy(path: Path, source_hash: str) -> Path:
    """``path`` executed (top to bottom, in a scratch copy of notebooks/), cached by hash."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    rel = path.relative_to(NOTEBOOKS)
    key = hashlib.sha256(path.read_bytes() + source_hash.encode()).hexdigest()[:16]
    out = EXECUTED / "out" / "notebooks" / rel
    stamp = out.with_suffix(".key")
    if out.is_file() and stamp.is_file() and stamp.read_text() == key:
        return out
    work = EXECUTED / "work"
    if not work.is_dir():   # notebooks read files next to them (data/...) and write scratch
        shutil.copytree(NOTEBOOKS, work, ignore=shutil.ignore_patterns("solutions"))
    nb = nbformat.read(path, as_version=4)
    env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline", "OMP_NUM_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3",
                       resources={"metadata": {"path": str(work / rel.parent)}}).execute()
    except CellExecutionError as exc:
        raise PluginError(f"docs: notebook {rel} failed to run: {exc}") from exc
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    stamp.write_text(key)
    return out


def notebook_paths() -> list[Path]:
    """The notebooks the site shows, in a stable order."""
    return sorted(p for pattern in PATTERNS for p in NOTEBOOKS.glob(pattern))


# before mkdocs-jupyter's on_files (default priority 0), which turns .ipynb files into pages
@event_priority(50)
def on_files(files: Files, config) -> Files:
    execute = os.environ.get("XPRUNE_DOCS_EXECUTE", "1") != "0"
    source_hash = _source_hash() if execute else ""
    if execute:
        shutil.rmtree(EXECUTED / "work", ignore_errors=True)   # a fresh scratch copy per build
    for path in notebook_paths():
        uri = "notebooks/" + path.relative_to(NOTEBOOKS).as_posix()
        if files.get_file_from_path(uri) is None:   # a copy under docs/ wins
            # src_dir: "notebooks/<name>" under it is the file to render (mkdocs-jupyter's
            # wrapper reads abs_src_path from src_dir, which File.generated would leave unset)
            src_dir = ROOT
            if execute:
                executed_copy(path, source_hash)
                src_dir = EXECUTED / "out"
            files.append(File(uri, src_dir=str(src_dir), dest_dir=config.site_dir,
                              use_directory_urls=config.use_directory_urls))
    return files


def on_config(config):
    """Fill the nav's ``Notebooks`` section with every notebook not listed anywhere in the nav:
    the tour notebooks, then the classroom exercises in a sub-section."""
    listed = set(_nav_pages(config.nav or []))
    for item in config.nav or []:
        if isinstance(item, dict) and "Notebooks" in item:
            section = list(item["Notebooks"] or [])
            uris = ["notebooks/" + p.relative_to(NOTEBOOKS).as_posix() for p in notebook_paths()]
            new = [u for u in uris if u not in listed]
            section += [u for u in new if not u.startswith("notebooks/classroom/")]
            classroom = [u for u in new if u.startswith("notebooks/classroom/")]
            if classroom:
                section.append({"Classroom exercises": classroom})
            item["Notebooks"] = section
    return config


def _nav_pages(nav) -> list[str]:
    pages = []
    for item in nav:
        values = item.values() if isinstance(item, dict) else [item]
        for value in values:
            pages.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return pages
