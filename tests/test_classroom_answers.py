"""No hint and no check message gives a graded answer away: every hint, every message the
panel exercise can say, and every text in the checks' code are held against the teacher-side
list of graded answers (kept with the solutions, outside the package). The panel exercise
speaks no code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from _graded_answers import EXERCISES, GRADED, assert_no_giveaway

from xprune_nb.ui.exercises import hints, prune_half

EXERCISE_DIR = Path(hints.__file__).parent
#: the module holding each exercise's checks
MODULES = {"ex1": "prune_half.py", "ex2": "criterion.py", "ex3": "why_removed.py",
           "ex4": "sensitive_layer.py", "ex5": "prune_half.py"}


def test_every_exercise_has_graded_answers():
    assert set(hints.HINTS) <= set(EXERCISES)
    for name in EXERCISES:
        assert GRADED[name]["phrases"] or GRADED[name]["answers"], name


@pytest.mark.parametrize("exercise", sorted(hints.HINTS))
def test_hints_give_no_graded_answer(exercise):
    for level in range(1, len(hints.HINTS[exercise]) + 1):
        text = str(hints.hint(exercise, level))
        assert_no_giveaway(exercise, text, answers=True)


@pytest.mark.parametrize("exercise", sorted(MODULES))
def test_check_texts_give_no_graded_phrase(exercise):
    """Every string in the check's code (messages are built from these pieces)."""
    tree = ast.parse((EXERCISE_DIR / MODULES[exercise]).read_text(encoding="utf-8"))
    texts = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
             and isinstance(n.value, str)]
    assert texts
    for text in texts:
        assert_no_giveaway(exercise, text)


def test_the_panel_exercise_speaks_no_code():
    for code, text in prune_half.PANEL_WORDS.items():
        assert "`" not in text and "study." not in text and "(" not in text.split(
            "{")[0], (code, text)
        assert_no_giveaway("ex5", text)
    for text in hints.HINTS["ex5"]:
        assert "`" not in text and "study." not in text


def test_check_box_records_each_check_per_student(tmp_path, monkeypatch):
    pytest.importorskip("ipywidgets")
    import xprune_nb as xp
    from xprune_nb.ui import exercises as ex
    from xprune_nb.ui.exercises import gradebook

    study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"), seed=0)
    book = tmp_path / "class" / "xprune_gradebook.csv"
    monkeypatch.setenv("XPRUNE_GRADEBOOK", str(book))
    monkeypatch.delenv("JUPYTERHUB_USER", raising=False)
    box = ex.CheckBox(ex.check_ex5, study, hints="ex5", label="Check my model")
    box.check_button.click()                      # no name yet: asked, nothing recorded
    assert "Type your name" in box.output.value and not book.exists()
    box.name.value = "  Ada   Lovelace "
    box.check_button.click()
    assert 'data-passed="false"' in box.output.value and "`" not in box.output.value
    assert "<code>" not in box.output.value       # the app speaks no code
    box.check_button.click()
    assert box.name.disabled                      # asked once
    rows = gradebook.read(book)
    assert rows["student"].tolist() == ["Ada Lovelace"] * 2
    assert rows["exercise"].tolist() == ["ex5"] * 2 and not rows["passed"].any()
    assert rows["code"].tolist() == ["not_pruned"] * 2
    assert set(rows["identified_by"]) == {"name"}
    # on a JupyterHub the hub user is the student; no name is asked
    monkeypatch.setenv("JUPYTERHUB_USER", "student17")
    hub = ex.CheckBox(ex.check_ex5, study)
    assert hub.name.layout.display == "none"
    hub.check_button.click()
    last = gradebook.read(book).iloc[-1]
    assert (last["student"], last["identified_by"]) == ("student17", "jupyterhub")
