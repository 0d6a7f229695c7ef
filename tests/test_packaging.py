"""The wheel and the sdist (``make wheel``) carry the notebooks and the student versions of the
classroom exercises, and never the teacher solutions; a wheel built from the sdist neither."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _build(source: Path, out: Path, *targets: str) -> list[Path]:
    pytest.importorskip("hatchling")
    args = [a for t in targets for a in ("-t", t)]
    proc = subprocess.run([sys.executable, "-m", "hatchling", "build", *args, "-d", str(out)],
                          cwd=source, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return sorted(out.iterdir())


def test_wheel_and_sdist_ship_no_teacher_solutions(tmp_path):
    built = _build(ROOT, tmp_path / "dist", "wheel", "sdist")
    wheel = next(p for p in built if p.suffix == ".whl")
    sdist = next(p for p in built if p.name.endswith(".tar.gz"))
    names = zipfile.ZipFile(wheel).namelist()
    students = sorted(p.name for p in (ROOT / "notebooks" / "classroom").glob("*.ipynb"))
    assert students
    for name in students:
        assert f"xprune_nb/ui/notebooks/classroom/{name}" in names
    assert "xprune_nb/ui/notebooks/classroom/nbgrader_config.py" in names
    assert "xprune_nb/ui/notebooks/01_quickstart.ipynb" in names
    assert not [n for n in names if "solutions" in n]
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
        assert not [n for n in members if "/solutions" in n]
        assert any(n.endswith("notebooks/classroom/01_prune_half.ipynb") for n in members)
        tar.extractall(tmp_path / "src", filter="data")
    # a wheel built from the sdist (what pip does with it) has no solutions either
    (root,) = (tmp_path / "src").iterdir()
    again = _build(root, tmp_path / "dist2", "wheel")
    names = zipfile.ZipFile(again[0]).namelist()
    assert "xprune_nb/ui/notebooks/classroom/01_prune_half.ipynb" in names
    assert not [n for n in names if "solutions" in n]
