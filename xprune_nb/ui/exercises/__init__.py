"""Classroom exercises: answer checks with instant feedback, and hints on request.

Each check recomputes the answer from the student's own study (so any correct route passes),
says what is wrong and where to look, never reveals the solution, and never raises: an answer
of the wrong form gives feedback that says what was expected. Feedback renders as HTML with
class ``xprune-feedback`` and ``data-passed="true|false"``, and as plain text with ``str()``.

============  ===========================================  ==================================
exercise      notebook (``notebooks/classroom/``)           check
============  ===========================================  ==================================
``ex1``       ``01_prune_half.ipynb``                       :func:`check_ex1`
``ex2``       ``02_which_criterion.ipynb``                  :func:`check_ex2`
``ex3``       ``03_why_removed.ipynb``                      :func:`check_ex3`
``ex4``       ``04_sensitive_layer.ipynb``                  :func:`check_ex4`
``ex5``       ``05_prune_half_app.ipynb`` (panel, no code)  :func:`check_ex5` (ex1 in the
                                                            panel's words) in a
                                                            :class:`CheckBox`
============  ===========================================  ==================================

Examples
--------
>>> import xprune_nb as xp
>>> from xprune_nb import exercises as ex
>>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"))
>>> feedback = ex.check_ex1(study)
>>> feedback.passed
False
>>> print(ex.hint("ex1", 1))  # doctest: +ELLIPSIS
Hint 1 of 3 for ex1: ...
"""

from __future__ import annotations

import importlib
from typing import Any

from .criterion import check_ex2
from .feedback import Feedback, Hint
from .hints import hint
from .measures import saliency_similarity
from .prune_half import check_ex1, check_ex5
from .sensitive_layer import check_ex4
from .why_removed import check_ex3

__all__ = ["check_ex1", "check_ex2", "check_ex3", "check_ex4", "check_ex5", "hint",
           "saliency_similarity", "Feedback", "Hint", "CheckBox", "student_version", "CHECKS"]

#: exercise id -> its check
CHECKS = {"ex1": check_ex1, "ex2": check_ex2, "ex3": check_ex3, "ex4": check_ex4,
          "ex5": check_ex5}

_LAZY = {"CheckBox": ("xprune_nb.ui.exercises.widget", "CheckBox"),
         "student_version": ("xprune_nb.ui.exercises.release", "student_version")}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'xprune_nb.ui.exercises' has no attribute {name!r}")
