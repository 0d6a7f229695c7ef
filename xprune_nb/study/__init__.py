"""Layer 10, the facade: :class:`Study` and the services that commit a step to its timeline.

``Study`` is imported on first use, so that ``import xprune_nb.study.delegate`` (or any service
here) does not pull in the whole facade.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Study"]


def __getattr__(name: str) -> Any:
    if name == "Study":
        from .facade import Study

        return Study
    raise AttributeError(f"module 'xprune_nb.study' has no attribute {name!r}")
