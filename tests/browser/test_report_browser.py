"""The stakeholder report in a real browser: opened from disk in headless Chromium, the page
starts with the summary, every embedded figure decodes, and the CSV download is a link.
Set ``XPRUNE_DOCS_SCREENSHOTS=DIR`` to save a screenshot of its top there."""

from __future__ import annotations

import os

import pytest

import xprune_nb as xp

pytestmark = pytest.mark.browser


def test_report_opens_with_the_summary_and_its_figures_load(page, tmp_path):
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
    study.score("taylor", samples=64)
    study.prune(0.4)
    path = study.report(tmp_path / "report.html", title="Moons, pruned by Taylor",
                        latency=False, include=["per_class", "forgotten", "why", "history",
                                                "glossary"])   # no Shapley: seconds, not a minute
    page.goto(path.as_uri())
    headings = page.locator("h2").all_inner_texts()
    assert headings[0] == "Summary" and "Glossary" in headings
    summary = page.locator("#summary")
    box = summary.bounding_box()
    assert box is not None and box["y"] < 300          # the first thing a reader sees
    assert "Test accuracy" in summary.inner_text()
    images = page.locator("img")
    assert images.count() >= 1
    widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? "
                                              "e.naturalWidth : 0)")
    assert all(w > 0 for w in widths), widths
    link = page.locator("a[download='why_step_1.csv']")
    assert link.count() == 1 and link.get_attribute("href").startswith("data:text/csv")
    folder = os.environ.get("XPRUNE_DOCS_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, "report.png"))
