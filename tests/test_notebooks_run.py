"""Every notebook the docs site shows (the tour and the student versions of the classroom
exercises) runs top to bottom without an error. It runs through the docs hook's executor, which
keeps the executed copy in build/docs-notebooks: `make docs` after `make test` then renders those
copies, with their outputs, without running anything again. (The teacher versions run under
nbmake: `pytest --nbmake notebooks/classroom/solutions`.)"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
try:
    import docs_hooks
finally:
    sys.path.remove(str(ROOT / "scripts"))

NOTEBOOKS = docs_hooks.notebook_paths()


@pytest.fixture(scope="module")
def source_hash():
    return docs_hooks._source_hash()


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.relative_to(ROOT).as_posix()
                                                 for p in NOTEBOOKS])
def test_notebook_runs(path, source_hash):
    import nbformat

    if os.environ.get("XPRUNE_SKIP_NOTEBOOKS") == "1":
        pytest.skip("XPRUNE_SKIP_NOTEBOOKS=1")
    out = docs_hooks.executed_copy(path, source_hash)
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors[:1]
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
