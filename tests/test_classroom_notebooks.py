"""The classroom notebooks: teacher versions are nbgrader-ready (generate_assignment and
autograde work on them, in a temporary course directory), and the student versions are exactly
what :func:`xprune_nb.ui.exercises.release.student_version` makes of them.

Both versions also run under ``pytest --nbmake notebooks`` (make test): solutions pass their
autograder cells, student notebooks run to the end and show not-passed feedback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from xprune_nb.ui.exercises.release import is_autograder_test, student_version

ROOT = Path(__file__).resolve().parents[1]
CLASSROOM = ROOT / "notebooks" / "classroom"
SOLUTIONS = CLASSROOM / "solutions"
NAMES = sorted(p.name for p in SOLUTIONS.glob("*.ipynb"))


def _nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def test_every_exercise_has_a_student_and_a_teacher_version():
    assert len(NAMES) >= 4
    assert NAMES == sorted(p.name for p in CLASSROOM.glob("*.ipynb"))


@pytest.mark.parametrize("name", NAMES)
def test_teacher_version_is_nbgrader_ready(name):
    nb = nbformat.read(SOLUTIONS / name, as_version=4)
    ids = [_nbgrader(c)["grade_id"] for c in nb.cells if _nbgrader(c)]
    assert len(ids) == len(set(ids)), "grade_id values must be unique"
    tests = [c for c in nb.cells if is_autograder_test(c)]
    assert tests, "at least one autograder test cell"
    for cell in tests:
        meta = _nbgrader(cell)
        assert meta["locked"] and meta["points"] > 0
        assert "assert_passed()" in cell.source
    solutions = [c for c in nb.cells if _nbgrader(c).get("solution")]
    assert solutions
    for cell in solutions:
        assert cell.source.count("### BEGIN SOLUTION") == cell.source.count("### END SOLUTION")
        assert "### BEGIN SOLUTION" in cell.source
    for cell in nb.cells:  # no region outside a cell marked as a solution
        if "### BEGIN SOLUTION" in cell.source:
            assert _nbgrader(cell).get("solution"), cell.source[:80]


@pytest.mark.parametrize("name", NAMES)
def test_student_version_is_generated_from_the_teacher_version(name):
    """Regenerate with ``python -m xprune_nb.ui.exercises.release notebooks/classroom/solutions
    notebooks/classroom`` after editing a teacher notebook."""
    expected = student_version(nbformat.read(SOLUTIONS / name, as_version=4))
    actual = nbformat.read(CLASSROOM / name, as_version=4)
    assert [(c.cell_type, c.source) for c in actual.cells] == \
        [(c.cell_type, c.source) for c in expected.cells]
    text = (CLASSROOM / name).read_text()
    assert "BEGIN SOLUTION" not in text and "assert_passed" not in text


def _run_nbgrader(args: list[str], course: Path) -> subprocess.CompletedProcess:
    # nbgrader runs the `alembic` command of its environment: the venv's bin must be on PATH
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "JUPYTER_CONFIG_DIR": str(course / ".jupyter"),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course}",
           "--ExecutePreprocessor.timeout=300", "--log-level=WARN"]
    proc = subprocess.run(cmd, cwd=course, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _execute(nb, cwd: Path) -> None:
    from nbclient import NotebookClient

    os.environ.setdefault("MPLBACKEND", "Agg")
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(cwd)}}).execute()


@pytest.mark.slow
def test_nbgrader_generate_assignment_and_autograde(tmp_path):
    pytest.importorskip("nbgrader")
    from nbgrader.api import Gradebook

    course = tmp_path / "course"
    source = course / "source" / "classroom"
    source.mkdir(parents=True)
    # the shipped template, as docs/classroom.md tells teachers to use it
    shutil.copy(CLASSROOM / "nbgrader_config.py", course / "nbgrader_config.py")
    for name in NAMES:
        shutil.copy(SOLUTIONS / name, source / name)
    _run_nbgrader(["generate_assignment", "classroom", "--force"], course)

    release = course / "release" / "classroom"
    for name in NAMES:
        text = (release / name).read_text()
        assert "BEGIN SOLUTION" not in text and "YOUR CODE HERE" in text
        # the autograder cells go out without their (hidden) checks: students see feedback,
        # never the assertion or its traceback
        assert "assert_passed()" not in text and "HIDDEN TESTS" not in text
        checksums = [c["metadata"]["nbgrader"].get("checksum")
                     for c in json.loads(text)["cells"]
                     if c["metadata"].get("nbgrader", {}).get("locked")]
        assert checksums and all(checksums)

    # carol runs the student version with wrong answers (every stub left empty): the checks
    # answer with feedback, and no cell shows a traceback
    graded = [n for n in NAMES if n.startswith(("01_", "03_"))]
    carol = course / "submitted" / "carol" / "classroom"
    carol.mkdir(parents=True)
    wrong = [n for n in graded if n.startswith("03_")]   # three checks in one notebook
    for name in wrong:
        nb = nbformat.read(release / name, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.source = cell.source.replace("raise NotImplementedError()", "pass")
        _execute(nb, release)
        errors = [o for c in nb.cells for o in c.get("outputs", [])
                  if o.output_type == "error" or "Traceback" in str(o.get("text", ""))]
        assert not errors, (name, errors[:1])
        shown = [o.get("data", {}).get("text/html", "") for c in nb.cells
                 for o in c.get("outputs", [])]
        assert any('class="xprune-feedback" data-passed="false"' in h for h in shown), name
        nbformat.write(nb, carol / name)

    # alice hands in the teacher's answers, bob an untouched notebook. Autograding runs every
    # notebook handed in, so two of them stand for all (nbmake runs every teacher notebook
    # and its autograder cells in `make test`): one with a single test cell, one with three.
    assert len(graded) == 2
    for student, names in (("alice", graded), ("bob", NAMES[:1])):
        folder = course / "submitted" / student / "classroom"
        folder.mkdir(parents=True)
        for name in names:
            src = SOLUTIONS / name if student == "alice" else release / name
            shutil.copy(src, folder / name)
    _run_nbgrader(["autograde", "classroom", "--create"], course)

    autograded = {}
    for name in graded:
        nb = nbformat.read(SOLUTIONS / name, as_version=4)
        autograded[name] = sum(_nbgrader(c)["points"] for c in nb.cells
                               if is_autograder_test(c))
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for name in graded:
            alice = gb.find_submission_notebook(name[:-6], "classroom", "alice")
            assert alice.score == autograded[name], (name, alice.score)
        bob = gb.find_submission_notebook(NAMES[0][:-6], "classroom", "bob")
        assert bob.score == 0   # the hidden checks were restored and run
        for name in wrong:
            assert gb.find_submission_notebook(name[:-6], "classroom", "carol").score == 0
    # the graded copy says why bob's answer failed: the stub raised NotImplementedError
    bob_copy = course / "autograded" / "bob" / "classroom" / NAMES[0]
    assert "NotImplementedError" in bob_copy.read_text()
