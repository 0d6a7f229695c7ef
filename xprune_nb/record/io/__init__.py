"""Files in and out, never running code by accident.

* :mod:`~xprune_nb.record.io.resolver` -- the one safe way to turn a stored class or factory name
  into an object (``trust_source`` opt-in, ``nn.Module`` check before any call, plain-JSON kwargs);
* :mod:`~xprune_nb.core.atomic` -- atomic writes: the previous file survives any failure;
* :mod:`~xprune_nb.core.reading` -- ``weights_only`` reads with clear errors, finite weights;
* :mod:`~xprune_nb.record.io.study_file` -- ``Study.save`` / ``Study.load`` files;
* :mod:`~xprune_nb.record.io.checkpoint` -- pruned-model checkpoints (``save_pruned`` /
  ``load_pruned``).
"""

from __future__ import annotations

from ...core.atomic import atomic_write, torch_save, write_bytes, write_text
from .resolver import build_module, check_plain_kwargs, resolve_factory, resolve_module_class

__all__ = ["atomic_write", "torch_save", "write_bytes", "write_text", "build_module",
           "check_plain_kwargs", "resolve_factory", "resolve_module_class"]
