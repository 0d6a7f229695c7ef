"""Retrain section: settings, and a live loss/accuracy plot fed by a training callback."""

from __future__ import annotations

import time
from typing import Any

import ipywidgets as W

from ...measure.training import OPTIMIZERS, Callback
from ._common import defaults_of, note_html
from ._plots import figure, to_png

__all__ = ["RetrainView", "LivePlot"]

#: Minimum seconds between redraws of the live plot.
REDRAW_INTERVAL = 1.0
#: Largest share of the training thread's time spent redrawing: a redraw costs ~0.1 s on a
#: small machine, so the next one waits at least twenty times as long as the last one took.
DRAW_BUDGET = 0.05


class RetrainView:
    """Controls mapped to the arguments of :meth:`Study.retrain`, and the live plot."""

    def __init__(self, study) -> None:
        defaults = defaults_of(type(study).retrain)
        self.epochs = W.BoundedIntText(value=defaults.get("epochs", 1), min=1, max=10_000,
                                       description="epochs")
        self.lr = W.BoundedFloatText(value=defaults.get("lr", 1e-3), min=1e-8, max=10.0,
                                     step=1e-4, description="learning rate",
                                     style={"description_width": "initial"})
        self.optimizer = W.Dropdown(options=OPTIMIZERS, value=defaults.get("optimizer", "adam"),
                                    description="optimizer")
        self.batch_size = W.BoundedIntText(value=defaults.get("batch_size", 64), min=1,
                                           max=1_000_000, description="batch size",
                                           style={"description_width": "initial"})
        self.plot = W.Image(format="png", layout=W.Layout(max_width="760px", display="none"))
        self.live = W.HTML()
        help_text = note_html(
            "Fine-tunes the current model on the training split and records a step. "
            "<b>Stop</b> (top bar) stops between batches and keeps the last complete batch's "
            "weights.")
        self.widget = W.VBox([
            W.HTML(help_text),
            W.HBox([self.epochs, self.lr]),
            W.HBox([self.optimizer, self.batch_size]),
            self.live, self.plot,
        ])

    def config(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`Study.retrain`."""
        return {"epochs": int(self.epochs.value), "lr": float(self.lr.value),
                "optimizer": self.optimizer.value, "batch_size": int(self.batch_size.value)}

    def callback(self, progress) -> LivePlot:
        """A training callback that feeds this view; ``progress(done, total, text)`` is the
        panel's progress bar."""
        return LivePlot(self, progress)


class LivePlot(Callback):
    """Per-batch loss and accuracy, per-epoch validation accuracy, drawn at most once a second."""

    def __init__(self, view: RetrainView, progress) -> None:
        self.view = view
        self.progress = progress
        self.losses: list[float] = []
        self.accuracies: list[float] = []
        self.val: list[tuple[int, float]] = []
        self.total = 0
        self.per_epoch = 1
        self._next = 0.0

    def on_train_start(self, epochs: int, batches_per_epoch: int) -> None:
        self.total, self.per_epoch = epochs * batches_per_epoch, max(batches_per_epoch, 1)
        self.epochs = epochs
        self._next = time.perf_counter() + REDRAW_INTERVAL
        self.view.live.value = ""
        self.progress(0, self.total, f"epoch 1/{epochs}")   # the bar before the first batch

    def on_batch_end(self, epoch: int, batch: int, loss: float, accuracy: float) -> None:
        self.losses.append(loss)
        self.accuracies.append(accuracy)
        self.progress(len(self.losses), self.total,
                      f"epoch {epoch + 1}/{self.epochs} · loss {loss:.3f} · acc {accuracy:.3f}")
        if time.perf_counter() >= self._next:
            self.draw()

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if "val_accuracy" in logs:
            self.val.append((len(self.losses), float(logs["val_accuracy"])))
        self.view.live.value = note_html(
            "epoch {epoch}: train loss {train_loss:.4f}".format(**logs)
            + (f", validation accuracy {logs['val_accuracy']:.4f}"
               if "val_accuracy" in logs else ""))

    def on_train_end(self, result) -> None:
        self.draw()

    def draw(self) -> None:
        if not self.losses:
            return
        start = time.perf_counter()
        fig, (ax1, ax2) = figure(8.5, 2.4, ncols=2)
        steps = range(1, len(self.losses) + 1)
        ax1.plot(steps, self.losses, lw=1, color="#c44e52")
        ax1.set_xlabel("batch")
        ax1.set_title("training loss")
        ax2.plot(steps, self.accuracies, lw=1, color="#4c72b0", alpha=0.6, label="train batch")
        if self.val:
            xs, ys = zip(*self.val)
            ax2.plot(xs, ys, "o-", color="#55a868", label="validation")
        ax2.set_ylim(0, 1.02)
        ax2.set_xlabel("batch")
        ax2.set_title("accuracy")
        ax2.legend(loc="lower right", fontsize=8)
        self.view.plot.value = to_png(fig)
        self.view.plot.layout.display = None
        took = time.perf_counter() - start
        self._next = time.perf_counter() + max(REDRAW_INTERVAL, took / DRAW_BUDGET)
