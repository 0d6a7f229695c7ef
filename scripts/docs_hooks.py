"""mkdocs hook: publish the notebooks under ``notebooks/`` as pages without copying them.

mkdocs only sees files inside ``docs/``; a symlink would break on Windows checkouts and a copy
would go stale, so each notebook is added to the build as a virtual file that points at the real
one (``notebooks/classroom/01_prune_half.ipynb`` → page ``notebooks/classroom/01_prune_half/``).
mkdocs-jupyter then renders it (``execute: false``: CI runs the notebooks elsewhere). Teacher
solutions stay out of the site.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
# the solutions would hand students the answers
PATTERNS = ("*.ipynb", "classroom/*.ipynb")


def notebook_paths() -> list[Path]:
    """The notebooks the site shows, in a stable order."""
    return sorted(p for pattern in PATTERNS for p in NOTEBOOKS.glob(pattern))


# before mkdocs-jupyter's on_files (default priority 0), which turns .ipynb files into pages
@event_priority(50)
def on_files(files: Files, config) -> Files:
    for path in notebook_paths():
        uri = "notebooks/" + path.relative_to(NOTEBOOKS).as_posix()
        if files.get_file_from_path(uri) is None:   # a copy under docs/ wins
            # src_dir=ROOT: "notebooks/<name>" is then the real path (mkdocs-jupyter's wrapper
            # reads abs_src_path from src_dir, which File.generated would leave unset)
            files.append(File(uri, src_dir=str(ROOT), dest_dir=config.site_dir,
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
