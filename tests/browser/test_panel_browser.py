"""The panel in a real browser: JupyterLab 4 and Notebook 7 render it, and every toolbar button
works in the rendered page. Timings (first render, click → updated view) go to
``build/panel_timings.json``; set ``XPRUNE_DOCS_SCREENSHOTS=DIR`` to save screenshots of each
section there (they illustrate docs/panel.md)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from .helpers import (
    ROOT,
    accept_kernel_dialog,
    click_and_wait,
    code_cells,
    open_notebook,
    params_of,
    run_all,
    run_cell,
    select_tab,
    text,
    wait_text,
)

pytestmark = pytest.mark.browser

#: The issue's targets: click → updated view for Score + Prune, and the panel's first render.
TARGET_SCORE_PRUNE_S = 1.0
TARGET_FIRST_RENDER_S = 2.0
#: Speed targets are benchmarks, not test verdicts: the figures are always recorded (and
#: printed); they are enforced only when XPRUNE_ENFORCE_TIMINGS=1 (benchmarks/bench_panel.py
#: and by hand), with XPRUNE_TIMING_SLACK as the allowed multiple of each target.
ENFORCE = os.environ.get("XPRUNE_ENFORCE_TIMINGS") == "1"
SLACK = float(os.environ.get("XPRUNE_TIMING_SLACK", "1"))
TIMINGS = ROOT / "build" / "panel_timings.json"


def _shoot(page, name: str, whole_page: bool = False) -> None:
    folder = os.environ.get("XPRUNE_DOCS_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        path = str(Path(folder) / f"{name}.png")
        panel = page.locator(".xprune-panel").first
        if whole_page:
            panel.scroll_into_view_if_needed()
            page.screenshot(path=path)
        else:
            panel.screenshot(path=path)


def test_panel_in_jupyterlab(jupyter, page):
    url, root = jupyter
    accept_kernel_dialog(page)
    open_notebook(page, f"{url}/lab/tree/panel_lab.ipynb?reset", url, "panel_lab.ipynb")
    setup, show_panel, *_ = code_cells(page)
    run_cell(page, setup)

    # first render: from running the cell to the panel's metrics strip on screen
    start = time.perf_counter()
    run_cell(page, show_panel)
    page.locator(".xprune-metrics").first.wait_for(state="visible")
    first_render = time.perf_counter() - start
    original = params_of(page)
    assert "accuracy" in text(page, "xprune-metrics")

    t_score = click_and_wait(page, "xprune-score", "Scored")
    assert page.locator(".xprune-panel img").first.is_visible()   # the score plot
    _shoot(page, "panel_score")

    t_preview = click_and_wait(page, "xprune-preview", "would remove")
    assert params_of(page) == original, "Preview must not change the study"
    assert "Preview" in page.locator(".xprune-panel").first.inner_text()
    _shoot(page, "panel_preview")

    t_prune = click_and_wait(page, "xprune-prune", "Pruned:")
    pruned = params_of(page)
    assert pruned < original

    t_retrain = click_and_wait(page, "xprune-retrain", "Retrained:")
    wait_text(page, "xprune-history", "retrain")
    _shoot(page, "panel_retrain")

    select_tab(page, "Explain")
    click_and_wait(page, "xprune-saliency", "Saliency: done")
    assert page.locator(".xprune-panel img:visible").count() >= 1
    _shoot(page, "panel_explain")

    # the Pathways tab: current step (retrained) against the original, both maps drawn
    select_tab(page, "Pathways")
    click_and_wait(page, "xprune-pathways", "Pathways: done", timeout=120_000)
    page.locator(".xprune-pathways-map svg").first.wait_for(state="visible")
    assert page.locator(".xprune-pathways-map g.n[data-removed='1']").count() >= 1
    painted = page.locator(".xprune-pathways-map").first.inner_html()
    page.locator(".xprune-pathways-class button").nth(1).click()      # colour by one class
    page.wait_for_function("(before) => document.querySelector('.xprune-pathways-map')"
                           ".innerHTML !== before", arg=painted, timeout=30_000)
    page.locator(".xprune-pathways-unit select").first.select_option(index=0)   # a unit
    wait_text(page, "xprune-pathways-why", "relevance[")
    _shoot(page, "panel_pathways")

    click_and_wait(page, "xprune-undo", "Now at step 1")
    assert params_of(page) == pruned
    click_and_wait(page, "xprune-undo", "Now at step 0")
    assert params_of(page) == original

    # the same clicks again, warm: the first ones above also pay one-off costs in the kernel
    # (matplotlib's import and font cache, the first scoring) while the page still renders
    t_score_warm = click_and_wait(page, "xprune-score", "Scored")
    t_prune_warm = click_and_wait(page, "xprune-prune", "Pruned:")
    assert params_of(page) == pruned                   # same seed, same scores, same prune
    click_and_wait(page, "xprune-undo", "Now at step 0")
    assert params_of(page) == original
    select_tab(page, "History")
    wait_text(page, "xprune-history", "4 steps")
    _shoot(page, "panel_history")

    click_and_wait(page, "xprune-export", "Exported the script")
    assert (root / "pruned_study.py").is_file()
    assert "xprune" in (root / "pruned_study.py").read_text()

    timings = {
        "first_render_s": round(first_render, 3),
        "score_plus_prune_first_s": round(t_score + t_prune, 3),
        "score_plus_prune_s": round(t_score_warm + t_prune_warm, 3),
        "score_click_s": round(t_score_warm, 3),
        "prune_click_s": round(t_prune_warm, 3),
        "preview_click_s": round(t_preview, 3),
        "retrain_1_epoch_click_s": round(t_retrain, 3),
        "criterion": "magnitude", "model": "digits_cnn", "ui": "JupyterLab 4",
    }
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    TIMINGS.write_text(json.dumps(timings, indent=2) + "\n")
    print("panel timings:", timings)
    if ENFORCE:
        assert timings["score_plus_prune_s"] <= SLACK * TARGET_SCORE_PRUNE_S, timings
        assert first_render <= SLACK * TARGET_FIRST_RENDER_S, timings


def test_panel_in_notebook7(jupyter, page):
    url, _ = jupyter
    accept_kernel_dialog(page)
    open_notebook(page, f"{url}/notebooks/panel_nb7.ipynb", url, "panel_nb7.ipynb")
    run_all(page)
    page.locator(".xprune-metrics").first.wait_for(state="visible", timeout=90_000)
    assert "params" in text(page, "xprune-metrics")
    click_and_wait(page, "xprune-score", "Scored")
    click_and_wait(page, "xprune-prune", "Pruned:")
    wait_text(page, "xprune-history", "prune")
    _shoot(page, "panel_notebook7", whole_page=True)
