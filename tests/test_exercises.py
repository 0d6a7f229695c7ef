"""Classroom checks: every exercise, fed wrong answers of several kinds, gives a specific hint
(asserted by its code and words); right answers pass; wrong-typed answers never raise; the
feedback is the same with 1 and 2 CPU threads."""

from __future__ import annotations

import pytest
import torch
from _graded_answers import assert_no_giveaway

import xprune_nb as xp
from xprune_nb.ui import exercises as ex
from xprune_nb.ui.exercises.feedback import Feedback


def new_study(digits):
    return xp.Study(xp.zoo.load("digits_cnn"), digits, seed=0)


def expect(feedback: Feedback, code: str, *words: str) -> None:
    assert isinstance(feedback, Feedback)
    assert_no_giveaway(feedback.exercise, str(feedback))
    assert feedback.passed is (code == "ok"), str(feedback)
    assert feedback.code == code, str(feedback)
    text = str(feedback)
    for word in words:
        assert word in text, f"{word!r} not in:\n{text}"
    html = feedback._repr_html_()
    assert 'class="xprune-feedback"' in html
    assert f'data-passed="{"true" if code == "ok" else "false"}"' in html


def same_with_threads(check) -> Feedback:
    """Run ``check()`` with 1 and with 2 threads; the feedback must not change."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = check()
        torch.set_num_threads(2)
        two = check()
    finally:
        torch.set_num_threads(before)
    assert str(one) == str(two)
    assert one._repr_html_() == two._repr_html_()
    return one


# ---------------------------------------------------------------- feedback and hints
def test_feedback_html_escapes_and_marks_code():
    fb = Feedback("ex1", False, "t <b>", ("look at `study.history` & <script>alert(1)</script>",
                                          "the *units*, not a*b"), "x\"y")
    html = fb._repr_html_()
    assert "<em>units</em>" in html and "a*b" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<code>study.history</code>" in html and "&amp;" in html
    assert 'data-code="x&quot;y"' in html and "<b>" not in html
    assert str(fb).startswith("[not yet] t <b>") and repr(fb) == str(fb)
    with pytest.raises(AssertionError, match="study.history"):
        fb.assert_passed()
    Feedback("ex1", True, "ok").assert_passed()


def test_hints_levels_and_bad_requests():
    for exercise, hints in ex.hints.HINTS.items():
        assert len(hints) >= 3
        shown = [ex.hint(exercise, level) for level in range(1, len(hints) + 1)]
        assert [h.level for h in shown] == list(range(1, len(hints) + 1))
        assert len({h.text for h in shown}) == len(hints)
        assert 'class="xprune-hint"' in shown[0]._repr_html_()
    assert "hints 1 to 3" in str(ex.hint("ex1", 9))
    assert "hints 1 to 3" in str(ex.hint("ex1", "2"))
    assert "'ex1'" in str(ex.hint("nope"))
    assert ex.hint(" EX2 ", 1).exercise == "ex2"


# ---------------------------------------------------------------- exercise 1
def test_ex1_wrong_answers_and_a_right_one(digits):
    study = new_study(digits)
    expect(ex.check_ex1(study), "not_pruned", "has not been pruned", "study.prune")
    expect(ex.check_ex1(study.model), "wrong_type", "got a model (DigitsCNN)", "not `study.model`")
    expect(ex.check_ex1("my study"), "wrong_type", "got a str 'my study'")
    expect(ex.check_ex1(None), "unanswered", "not answered")

    study.score("magnitude", granularity="weight")
    study.prune(0.6)
    expect(ex.check_ex1(study), "masked_weights", "granularity=\"weight\"", "channel")

    study.goto(0)
    study.score("taylor", granularity="channel", samples=256)
    study.prune(0.1)
    expect(ex.check_ex1(study), "too_many_params", "target is at most 50%", "*units*")

    study.goto(0)
    pruned = study.prune(0.35)
    expect(ex.check_ex1(study), "no_retrain", "below 0.95", "not retrained")

    study.retrain(epochs=1, lr=1e-7, progress=False)
    expect(ex.check_ex1(study), "low_accuracy", "even after retraining", "history")

    study.goto(pruned.index)
    good = study.retrain(epochs=5, lr=1e-3, progress=False)
    ok = same_with_threads(lambda: ex.check_ex1(study))
    expect(ok, "ok", "42%")

    study.goto(0)
    expect(ex.check_ex1(study), "not_current", f"Step {good.index}", f"study.goto({good.index})")


# ---------------------------------------------------------------- exercise 2
@pytest.fixture(scope="module")
def branches(digits):
    """One branch per criterion from the original, 30% of the channels each."""
    study = new_study(digits)
    sims = {}
    for criterion in ("magnitude", "taylor", "lrp", "random"):
        study.goto(0)
        study.score(criterion, samples=256)
        step = study.prune(0.3)
        sims[criterion] = ex.saliency_similarity(study, step.index)
    return study, sims


def test_ex2_right_answer_same_with_1_and_2_threads(branches):
    study, sims = branches
    best = max(sims, key=sims.get)
    fb = same_with_threads(lambda: ex.check_ex2(study, best, sims))
    expect(fb, "ok", f"'{best}' kept the saliency maps closest")
    expect(ex.check_ex2(study, best.upper(), sims), "ok")
    # a wrong answer's feedback does not change with the thread count either
    worst = min(sims, key=sims.get)
    same_with_threads(lambda: ex.check_ex2(study, worst, sims))


def test_ex2_wrong_answers(branches):
    study, sims = branches
    best = max(sims, key=sims.get)
    worst = min(sims, key=sims.get)
    middle = sorted(sims, key=sims.get)[1]
    expect(ex.check_ex2(study, worst, sims), "least_close", "changed the *most*")
    expect(ex.check_ex2(study, middle, sims), "not_closest", "Another criterion",
           "largest is the closest")
    expect(ex.check_ex2(study, "shapley", sims), "not_compared", "'shapley' is not one",
           "'lrp'")
    wrong = {**sims, best: sims[best] - 0.2}
    expect(ex.check_ex2(study, best, wrong), "numbers_mismatch", f"for '{best}'",
           "not a retrained step")
    partial = {k: v for k, v in sims.items() if k != "random"}
    expect(ex.check_ex2(study, best, partial), "numbers_mismatch", "missing: 'random'")
    # wrong forms never raise and say what was expected
    expect(ex.check_ex2(study, 3, sims), "wrong_type", "`closest` should be a criterion name",
           "an int 3")
    expect(ex.check_ex2(study, best, "0.7"), "wrong_type", "`similarity` should be a dict")
    expect(ex.check_ex2(study, best, {best: "0.7"}), "wrong_type", "without quotes")
    expect(ex.check_ex2(study.model, best, sims), "wrong_type", "got a model")
    expect(ex.check_ex2(study, None, sims), "unanswered", "`closest` is None")


def test_ex2_bad_experiments(digits):
    sims = {"magnitude": 0.5, "lrp": 0.6, "random": 0.4}
    study = new_study(digits)
    expect(ex.check_ex2(study, "lrp", sims), "no_branches", "no prune steps")

    # pruned one after the other instead of branching from the same model
    for criterion in ("magnitude", "lrp", "random"):
        study.score(criterion, samples=128)
        study.prune(0.2)
    expect(ex.check_ex2(study, "lrp", sims), "not_branched", "study.goto(0)")

    study = new_study(digits)
    for criterion, amount in (("magnitude", 0.3), ("lrp", 0.5), ("random", 0.3)):
        study.goto(0)
        study.score(criterion, samples=128)
        study.prune(amount)
    expect(ex.check_ex2(study, "lrp", sims), "unequal_amounts", "like with like", "amount 0.5")

    study = new_study(digits)
    for criterion in ("magnitude", "lrp"):
        study.goto(0)
        study.score(criterion, samples=128)
        study.prune(0.3)
    expect(ex.check_ex2(study, "lrp", sims), "too_few", "at least 3")
    study.goto(0)
    study.score("taylor", samples=128)
    study.prune(0.3)
    expect(ex.check_ex2(study, "lrp", sims), "no_baseline", "\"random\"")


def test_ex2_accuracy_is_not_the_question(digits):
    """Among these three, Taylor keeps the most accuracy but not the closest maps."""
    study = new_study(digits)
    sims, acc = {}, {}
    for criterion in ("taylor", "gradient", "random"):
        study.goto(0)
        study.score(criterion, samples=128)
        step = study.prune(0.3)
        sims[criterion] = ex.saliency_similarity(study, step.index)
        acc[criterion] = step.metrics["accuracy"]
    by_accuracy = max(acc, key=acc.get)
    assert sims[by_accuracy] < max(sims.values()) - ex.criterion.TOLERANCE, (sims, acc)
    expect(ex.check_ex2(study, by_accuracy, sims), "accuracy_not_saliency",
           "highest accuracy", "not the accuracies")


def test_saliency_similarity_of_a_step_with_itself_is_one(digits):
    study = new_study(digits)
    assert ex.saliency_similarity(study, 0) == 1.0


# ---------------------------------------------------------------- exercise 3
@pytest.fixture(scope="module")
def why_study(digits):
    """Three prune branches from the original (30% each): taylor, magnitude, lrp."""
    study = new_study(digits)
    steps = []
    for criterion in ("taylor", "magnitude", "lrp"):
        study.goto(0)
        study.score(criterion, granularity="channel", samples=256)
        steps.append(study.prune(0.3))
    return study, steps


def _unit(row) -> tuple[str, int]:
    return str(row["layer"]), int(row["unit"])


def test_ex3_right_answers(why_study):
    study, steps = why_study
    step = steps[0]
    removed = study.why(step.index).to_frame()
    top = removed.loc[removed["normalized"].idxmax()]
    table = study.why(step.index).per_class_accuracy
    hurt = int(table["change"].idxmin())
    fb = same_with_threads(lambda: ex.check_ex3(
        study, step, closest_unit=_unit(top), percentile=float(top["percentile"]),
        hurt_class=hurt))
    expect(fb, "ok", "closest call", "`percentile`: right", "`hurt_class`: right")
    # the class may be given by its name, the step by its index, the unit as a list
    expect(ex.check_ex3(study, step.index, hurt_class=str(table["class"][hurt])), "ok")
    expect(ex.check_ex3(study, step.index, closest_unit=list(_unit(top))), "ok")


def test_ex3_wrong_units(why_study):
    study, steps = why_study
    # a branch where the highest raw score among the removed units is not the closest call
    # (raw scores of different layers are on different scales)
    for step in steps:
        why = study.why(step.index)
        removed, every = why.to_frame(), why.all_scores
        closest = _unit(removed.loc[removed["normalized"].idxmax()])
        by_raw = _unit(removed.loc[removed["score"].idxmax()])
        if by_raw != closest:
            break
    else:
        pytest.fail("no branch where raw and normalised scores disagree")
    farthest = _unit(removed.loc[removed["normalized"].idxmin()])
    gone = {_unit(r) for _, r in removed.iterrows()}
    kept = next(_unit(r) for _, r in every.iterrows() if _unit(r) not in gone)
    other = next(u for u in sorted(gone) if u not in {closest, farthest, by_raw})
    check = lambda unit: ex.check_ex3(study, step, closest_unit=unit)  # noqa: E731
    expect(check(kept), "still_there", "was not removed", "still")
    expect(check(farthest), "farthest", "*furthest*")
    expect(check(by_raw), "raw_score", "*raw* score", "not made from the raw `score` column")
    expect(check(other), "not_closest", "another removed unit was closer")
    expect(check(("dense", 0)), "unknown_layer", "'dense' is not a layer", "'conv1'")
    expect(check(("conv1", 99)), "out_of_range", "units 0 to 15", "before the step")
    expect(check(3), "wrong_type", "pair `(layer name, unit index)`", "an int 3")
    expect(check(None), "unanswered", "`closest_unit` is None")
    expect(ex.check_ex3(study, 0, closest_unit=kept), "not_prune_step", "'original' step")
    expect(ex.check_ex3(study, 99, closest_unit=kept), "unknown_step", "steps 0 to 3")
    expect(ex.check_ex3(study, step), "unanswered", "at least one answer")


def test_ex3_wrong_percentiles(why_study):
    study, steps = why_study
    removed = study.why(steps[0].index).to_frame()
    top = removed.loc[removed["normalized"].idxmax()]
    p, rank = float(top["percentile"]), int(top["rank"])
    assert abs(p - 50) > 5 and abs(rank - p) > 1  # the wrong answers below are distinct
    check = lambda value: ex.check_ex3(study, steps[0], percentile=value)  # noqa: E731
    expect(check(p / 100), "fraction", "0 to 100")
    expect(check(rank), "rank_not_percentile", "rank")
    expect(check(100 - p), "inverted", "wrong end")
    expect(check(p + 3), "wrong_percentile", "percentile <")
    expect(check(str(p)), "wrong_type", "without quotes")


def test_ex3_wrong_classes(digits):
    """Class answers against per-class accuracies chosen so that every mistake is distinct."""
    study = new_study(digits)
    study.score("magnitude")
    step = study.prune(0.2)
    study.history[0].per_class_accuracy = [1.0, 1.0, 1.0, 1.0, 0.3, 1.0, 1.0, 1.0, 1.0, 0.9]
    study.history[step.index].per_class_accuracy = [0.9, 0.4, 1.0, 0.95, 0.25, 1.0, 1.0, 1.0,
                                                    1.0, 0.95]
    klass = lambda value: ex.check_ex3(study, step, hurt_class=value)  # noqa: E731
    expect(klass(1), "ok")
    expect(klass(4), "lowest_after", "lowest accuracy *after*")
    expect(klass(9), "sign", "dropped most")
    expect(klass(0), "not_largest", "another class lost more")
    expect(klass(42), "unknown_class", "class index 0-9")
    expect(klass(torch.nn.Linear(2, 2)), "unknown_class", "class index")
    expect(klass(None), "unanswered", "`hurt_class` is None")


# ---------------------------------------------------------------- exercise 4
@pytest.fixture(scope="module")
def scan(digits):
    study = new_study(digits)
    study.score("magnitude", granularity="channel")
    before = study.history[0].metrics["accuracy"]
    drops, after = {}, {}
    for group in ("conv1", "conv2", "fc1"):
        step = study.prune(0.0, layer_amounts={group: 0.5})
        drops[group] = before - step.metrics["accuracy"]
        after[group] = step.metrics["accuracy"]
        study.undo()
    return study, drops, after


def test_ex4_right_answer_same_with_1_and_2_threads(scan):
    study, drops, _ = scan
    best = max(drops, key=drops.get)
    expect(same_with_threads(lambda: ex.check_ex4(study, best, drops)), "ok",
           f"'{best}' is the most sensitive")
    rounded = {k: round(v, 3) for k, v in drops.items()}
    expect(ex.check_ex4(study, best.upper(), rounded), "ok")


def test_ex4_wrong_answers(scan):
    study, drops, after = scan
    order = sorted(drops, key=drops.get)
    least, middle, best = order[0], order[1], order[-1]
    expect(ex.check_ex4(study, least, drops), "least_sensitive", "*least* accuracy")
    expect(ex.check_ex4(study, middle, drops), "not_most_sensitive", "cost more accuracy")
    expect(ex.check_ex4(study, "dense", drops), "unknown_layer", "'dense'", "'conv1'")
    expect(ex.check_ex4(study, best, {**drops, best: after[best]}), "accuracy_not_drop",
           "*after* pruning")
    expect(ex.check_ex4(study, best, {**drops, best: -drops[best]}), "drop_sign", "wrong sign")
    expect(ex.check_ex4(study, best, {**drops, best: 100 * drops[best]}), "percent",
           "percentage points")
    expect(ex.check_ex4(study, best, {**drops, best: drops[best] + 0.05}), "drops_mismatch",
           "does not match step")
    expect(ex.check_ex4(study, best, {best: drops[best]}), "drops_mismatch", "misses")
    expect(ex.check_ex4(study, best, {**drops, "dense": 0.1}), "drops_mismatch", "'dense'")
    expect(ex.check_ex4(study, 1, drops), "wrong_type", "`most_sensitive` should be")
    expect(ex.check_ex4(study, best, [0.1, 0.2]), "wrong_type", "`drops` should be a dict")
    expect(ex.check_ex4(study.model, best, drops), "wrong_type", "got a model")


def test_ex4_bad_experiments(digits):
    drops = {"conv1": 0.1, "conv2": 0.02, "fc1": 0.01}
    study = new_study(digits)
    expect(ex.check_ex4(study, "conv1", drops), "no_experiment", "layer_amounts")
    study.score("magnitude")
    study.prune(0.3)  # every layer at once is not a sensitivity scan
    expect(ex.check_ex4(study, "conv1", drops), "no_experiment")
    study.goto(0)
    for group in ("conv1", "fc1"):
        study.prune(0.0, layer_amounts={group: 0.5})
        study.undo()
    expect(ex.check_ex4(study, "conv1", drops), "missing_layers", "2 of the 3 prunable layers",
           "study.prunable()")
    assert "conv2" not in str(ex.check_ex4(study, "conv1", drops))   # the untried layer
    study.prune(0.0, layer_amounts={"conv2": 0.25})
    study.undo()
    expect(ex.check_ex4(study, "conv1", drops), "unequal_fractions", "'conv2' 25%",
           "same fraction")
    step = study.prune(0.0, layer_amounts={"conv2": 0.5})
    retrained = study.retrain(epochs=1, progress=False)
    study.goto(0)
    base = study.history[0].metrics["accuracy"]
    assert abs(retrained.metrics["accuracy"] - step.metrics["accuracy"]) > 0.005
    late = {"conv2": base - retrained.metrics["accuracy"]}
    for s in study.history:
        if s.kind == "prune" and s.parent == 0 and set(s.removed) <= {"conv1", "fc1"}:
            late[next(iter(s.removed))] = base - s.metrics["accuracy"]
    expect(ex.check_ex4(study, "conv1", late), "after_retrain", "after retraining")


def test_check_box_shows_feedback_and_hints(digits):
    pytest.importorskip("ipywidgets")
    study = new_study(digits)
    box = ex.CheckBox(ex.check_ex1, study, hints="ex5")
    box.check_button.click()
    assert 'data-passed="false"' in box.output.value and "not been pruned" in box.output.value
    box.hint_button.click()
    assert 'data-level="1"' in box.output.value
    for _ in range(5):
        box.hint_button.click()
    assert 'data-level="3"' in box.output.value
    assert "xprune-check" in box.widget._dom_classes
