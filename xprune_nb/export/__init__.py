"""Export: writers of standalone scripts, reports and the outputs scripts produce.

* :func:`write_script` — a readable ``.py`` file that reproduces a study (``study.export_script``).
* :func:`save_pruned` / :func:`load_pruned` — pruned models as plain tensors and data (they live
  in :mod:`xprune_nb.record.io.checkpoint`; re-exported here for exported scripts).
* :func:`write_outputs`, :func:`load_weights`, :func:`load_data`,
  :func:`load_groups` — what exported scripts call.

Nothing here imports widgets; scripts need only this headless core and torch.
"""

from __future__ import annotations

from ..record.io.checkpoint import load_pruned, save_pruned
from ..record.io.pretrained_load import build_pretrained
from ..record.recipe.replay import as_bundle
from .outputs import (
    check_group_limits,
    load_data,
    load_groups,
    load_weights,
    summary_metrics,
    write_outputs,
)
from .script import write_script

__all__ = ["write_script", "save_pruned", "load_pruned", "write_outputs", "load_weights",
           "load_data", "load_groups", "check_group_limits", "summary_metrics", "as_bundle",
           "build_pretrained"]
