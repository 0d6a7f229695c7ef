"""One value per number per report: the history, the drift table, the panel strip and the
report's caption show the same saliency rank correlation for a step (the probe's), and a
number of other rows is labelled as such."""

import pytest
from conftest import make_study


@pytest.fixture(scope="module")
def study(small_digits):
    s = make_study("mlp", small_digits, seed=0, probe_size=16)
    s.score("magnitude", granularity="channel")
    s.prune(0.5)
    return s


def test_every_display_shows_the_probe_value(study):
    from xprune_nb.export.report_context import ReportContext
    from xprune_nb.export.report_summary import _explanations
    from xprune_nb.ui.widgets.strip import MetricsStrip

    value = study.step.drift["saliency_spearman"]
    assert study.history.to_frame()["saliency_rank_correlation"].iloc[-1] == value
    assert study.drift().to_frame()["saliency_rank_correlation"].iloc[-1] == value
    # the same definitions on the probe's inputs: exactly the history's number
    comp = study.saliency(0, -1, inputs=study.probe_x, labels=study.probe_y.tolist())
    assert comp.summary()["saliency_rank_correlation"] == value
    text = _explanations(ReportContext(study, before=0, after=study.current, latency=False,
                                       explain=False))
    assert f"data-name='saliency_rank_correlation' data-value='{value!r}'" in text
    assert "probe set" in text
    strip = MetricsStrip()
    strip.update(study, None, None)
    assert f"saliency rank correlation {value:.3f} (probe)" in strip.text


def test_a_missing_probe_number_shows_its_reason_everywhere(study, monkeypatch):
    from xprune_nb.ui.widgets.history import _probe_number
    from xprune_nb.ui.widgets.strip import MetricsStrip

    step = study.step
    saved = dict(step.drift)
    try:
        step.drift.update(saliency_spearman=float("nan"),
                          saliency_reason="16 of 16 probe inputs n/a (after: all-zero map)")
        strip = MetricsStrip()
        strip.update(study, None, None)
        assert "n/a: 16 of 16 probe inputs n/a (after: all-zero map)" in strip.text
        assert _probe_number(step) == "n/a: 16 of 16 probe inputs n/a (after: all-zero map)"
        assert study.history.to_frame()["saliency_reason"].iloc[-1].startswith("16 of 16")
    finally:
        step.drift.clear()
        step.drift.update(saved)
