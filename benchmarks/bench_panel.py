"""Panel benchmarks (issue 4), headless: the kernel's share of the panel's first render and of
the Score + Prune clicks, and what the live retraining plot costs against retraining without it.

Run by hand: ``.venv/bin/python benchmarks/bench_panel.py``; results are printed and written to
``build/bench_panel.json``. The browser figures (click -> updated page) come from the browser
test, ``build/panel_timings.json``; both go to docs/panel.md.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import xprune_nb as xp  # noqa: E402

REPEATS = 5
#: long enough (~3 s of training on two cores) for the live plot to redraw a few times
RETRAIN_EPOCHS = 40


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> dict:
    data = xp.datasets.load("digits")
    study = xp.Study(xp.zoo.load("digits_cnn"), data, seed=0)
    first_panel = timed(lambda: xp.Panel(study))     # cold: first widgets and import costs
    time.sleep(1.5)                                   # let the matplotlib prewarm finish
    renders = [timed(lambda: xp.Panel(study)) for _ in range(REPEATS)]

    panel = xp.Panel(study)
    time.sleep(1.5)
    score, prune = [], []
    for _ in range(REPEATS):
        score.append(timed(panel.score))
        prune.append(timed(panel.prune))
        panel.undo()

    # throughput of the training loop (batches per second), with and without the panel's live
    # plot and progress bar; interleaved so that drift of the machine hits both alike
    bare, live, bare_wall, live_wall = [], [], [], []
    panel.retrain_view.epochs.value = RETRAIN_EPOCHS
    for _ in range(3):
        panel.goto(0)
        bare_wall.append(timed(lambda: study.retrain(epochs=RETRAIN_EPOCHS, progress=False)))
        r = study.last_train_result
        bare.append(r.batches_done / r.seconds)
        panel.goto(0)
        live_wall.append(timed(panel.retrain))
        r = study.last_train_result
        live.append(r.batches_done / r.seconds)
    throughput_cost = 1 - statistics.median(live) / statistics.median(bare)
    results = {
        "machine": f"{platform.processor() or platform.machine()}, torch threads 1",
        "model": "digits_cnn", "criterion": "magnitude",
        "panel_first_construct_s": round(first_panel, 4),
        "panel_construct_median_s": round(statistics.median(renders), 4),
        "score_click_median_s": round(statistics.median(score), 4),
        "prune_click_median_s": round(statistics.median(prune), 4),
        "retrain_epochs": RETRAIN_EPOCHS,
        "retrain_batches_per_s_without_panel": round(statistics.median(bare), 1),
        "retrain_batches_per_s_with_panel": round(statistics.median(live), 1),
        "retrain_throughput_cost": round(throughput_cost, 4),
        "retrain_wall_without_panel_s": round(statistics.median(bare_wall), 3),
        "retrain_wall_with_panel_s": round(statistics.median(live_wall), 3),
    }
    browser = ROOT / "build" / "panel_timings.json"
    if browser.is_file():
        results["browser"] = json.loads(browser.read_text())
    out = ROOT / "build" / "bench_panel.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
