"""The panel's Pathways tab, headless: set the controls, click, and check that the tab made its
one core call (Study.pathways_compare) with those settings, drew both maps, re-colours them by
class, shows a unit's why-row, and puts errors in the status line."""

from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")

import xprune_nb as xp  # noqa: E402
from xprune_nb.ui.widgets import Panel  # noqa: E402


@pytest.fixture
def study():
    s = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
    s.score("lrp")
    s.prune(0.4)
    return s


def test_pathways_tab_maps_recolours_and_shows_a_why_row(study, monkeypatch):
    panel = Panel(study)
    try:
        view = panel.pathways_view
        assert "xprune-pathways" in view.button._dom_classes
        assert [o[1] for o in view.against.options] == [0, 1]
        view.against.value = 0
        view.classes.value = ("lower moon",)
        calls = []
        real = study.pathways_compare
        monkeypatch.setattr(study, "pathways_compare",
                            lambda **kw: calls.append(kw) or real(**kw))
        view.button.click()
        assert panel.wait(120)
        assert panel.status.startswith("✔"), panel.status
        assert calls[0]["before"] == 0 and calls[0]["after"] == 1
        assert calls[0]["classes"] == ["lower moon"]
        assert panel.tabs.get_title(panel.tabs.selected_index) == "Pathways"
        assert "Class lower moon:" in view.sentences.value
        assert "<svg" in view.before_map.value and "<svg" in view.after_map.value
        # removed units are drawn hollow in the current step's map only
        assert 'data-removed="1"' in view.after_map.value
        assert 'data-removed="1"' not in view.before_map.value
        painted = view.after_map.value
        view.colour.value = "lower moon"
        assert view.after_map.value != painted
        layer, unit = next(v for _label, v in view.unit.options
                           if v[1] in study.pathways(classes=[1]).removed_at.get(v[0], {}))
        view.unit.value = (layer, unit)
        assert "removed_at" in view.why.value and "relevance[lower moon]" in view.why.value
    finally:
        panel.close()


def test_pathways_errors_end_in_the_status_line():
    study = xp.Study(xp.zoo.load("digits_lstm"), xp.datasets.load("digits"), seed=0)
    panel = Panel(study)
    try:
        panel.pathways_view.classes.value = ("0",)
        assert panel.pathways() is None
        assert "recurrent layers" in panel.status
    finally:
        panel.close()
