"""The teacher-side list of graded answers (notebooks/classroom/solutions/graded_answers.json)
and the check that a hint or check message gives none of them away."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRADED = json.loads((ROOT / "notebooks" / "classroom" / "solutions" /
                     "graded_answers.json").read_text(encoding="utf-8"))
EXERCISES = [k for k in GRADED if not k.startswith("_")]


def giveaways(exercise: str, text: str, *, answers: bool = False) -> list[str]:
    """The graded phrases (and, with ``answers``, the right values) found in ``text``."""
    entry = GRADED.get(exercise, {"phrases": [], "answers": []})
    low = text.lower()
    found = [p for p in entry["phrases"] if p.lower() in low]
    if answers:
        found += [a for a in entry["answers"]
                  if re.search(rf"(?<![\w]){re.escape(a.lower())}(?![\w])", low)]
    return found


def assert_no_giveaway(exercise: str, text: str, *, answers: bool = False) -> None:
    found = giveaways(exercise, text, answers=answers)
    assert not found, f"{exercise}: gives away {found} in:\n{text}"
