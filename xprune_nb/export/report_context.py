"""What a report knows about its study, computed once: the summary and every section read the
same results, so a number shown twice has one value."""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field

from .report_format import Terms

__all__ = ["ReportContext", "figure_html"]


def figure_html(fig, caption: str, alt: str) -> str:
    """A matplotlib figure embedded as a base64 PNG (the report stays one self-contained file)."""
    import html

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f"<figure><img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


@dataclass
class ReportContext:
    """The study, the two steps compared (``before``: the original; ``after``: the current
    one), the terms used so far and the results computed so far.

    Section builders call the properties; each result is computed on first use and kept, and
    a result that cannot be computed is ``None`` with its reason in :attr:`missing`.
    """

    study: object
    before: int = 0
    after: int = 0
    latency: bool = True
    explain: bool = True   # saliency and Shapley (the summary cites them only when shown)
    terms: Terms = field(default_factory=Terms)
    missing: dict[str, str] = field(default_factory=dict)
    _cache: dict = field(default_factory=dict)

    def _get(self, key: str, compute):
        if key not in self._cache:
            try:
                self._cache[key] = compute()
            except Exception as exc:  # noqa: BLE001 - one missing part must not sink the report
                self._cache[key] = None
                self.missing[key] = " ".join(str(exc).split()) or type(exc).__name__
        return self._cache[key]

    @property
    def step_before(self):
        return self.study.history[self.before]

    @property
    def step_after(self):
        return self.study.history[self.after]

    def metrics(self, which: str):
        """The :class:`~xprune_nb.measure.metrics.Metrics` of the ``before`` or ``after`` step's
        model, latency measured now (the history records no times: they depend on the machine)."""
        index = self.before if which == "before" else self.after
        return self._get(f"metrics_{which}", lambda: self.study.evaluate(
            latency=self.latency, step=index))

    @property
    def forgotten(self):
        return self._get("forgotten", lambda: self.study.forgotten(
            self.before, self.after, n_examples=8, saliency=False))

    @property
    def drift_row(self) -> dict:
        """The drift table's row of the ``after`` step (probe-set drift vs the original)."""
        def row():
            frame = self.study.drift().to_frame()
            return {k: v for k, v in frame.loc[self.after].items()}
        return self._get("drift", row) or {}

    @property
    def saliency(self):
        return self._get("saliency", lambda: self.study.saliency(self.before, self.after, n=4))

    @property
    def shapley(self):
        if not self.explain:
            return None

        def compute():
            x = self.study.data.train.X
            if not hasattr(x, "dim") or x.dim() != 2 or not x.is_floating_point() \
                    or x[0].numel() > 64:
                raise ValueError("Shapley values are drawn for tabular inputs of at most 64 "
                                 "features; run study.shapley() for these inputs")
            return self.study.shapley(self.before, self.after, n=10, background_size=20)
        return self._get("shapley", compute)

    def prune_steps(self) -> list:
        """The prune steps on the path from the original to the ``after`` step."""
        return [s for s in self.study.timeline.path(self.after) if s.kind == "prune"]

    def per_class(self) -> list[tuple[str, float, float]]:
        """(class name, accuracy before, accuracy after) for every class with test examples."""
        names = self.study.data.class_names
        before = self.step_before.per_class_accuracy
        after = self.step_after.per_class_accuracy
        return [(str(names[i]) if i < len(names) else str(i), b, a)
                for i, (b, a) in enumerate(zip(before, after))
                if isinstance(b, float) and math.isfinite(b)]
