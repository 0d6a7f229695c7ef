"""Bounded storage of model weights per history step: recent ones in memory, older on disk.

Files are written with ``torch.save`` of plain tensors and read with ``weights_only=True``.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from pathlib import Path

import torch

__all__ = ["SnapshotStore"]


class SnapshotStore:
    """Keep at most ``max_in_memory`` state dicts in memory; spill the least recently used.

    Examples
    --------
    >>> store = SnapshotStore(max_in_memory=1)
    >>> store.put(0, {"w": torch.zeros(2)}); store.put(1, {"w": torch.ones(2)})
    >>> store.in_memory, store.on_disk
    ([1], [0])
    >>> store.get(0)["w"].tolist()
    [0.0, 0.0]
    """

    def __init__(self, max_in_memory: int = 8, directory: str | Path | None = None) -> None:
        self.max_in_memory = max(1, int(max_in_memory))
        self._memory: OrderedDict[int, dict] = OrderedDict()
        self._disk: dict[int, Path] = {}
        self._dir_arg = directory
        self._dir: Path | None = None
        # reading threads (model_at, evaluate(step=)) may run while the study's owner thread
        # commits: a get must never see a step half moved from memory to disk
        self._guard = threading.RLock()

    def _directory(self) -> Path:
        if self._dir is None:
            if self._dir_arg is not None:
                self._dir = Path(self._dir_arg)
                self._dir.mkdir(parents=True, exist_ok=True)
            else:
                self._dir = Path(tempfile.mkdtemp(prefix="xprune_snapshots_"))
                weakref.finalize(self, shutil.rmtree, str(self._dir), True)
        return self._dir

    @property
    def in_memory(self) -> list[int]:
        return list(self._memory)

    @property
    def on_disk(self) -> list[int]:
        return sorted(self._disk)

    def __contains__(self, index: int) -> bool:
        return index in self._memory or index in self._disk

    def put(self, index: int, state: dict) -> None:
        copied = {k: v.detach().clone() for k, v in state.items()}
        with self._guard:
            self._memory[index] = copied
            self._memory.move_to_end(index)
            while len(self._memory) > self.max_in_memory:
                old, old_state = self._memory.popitem(last=False)
                path = self._directory() / f"step_{old}.pt"
                torch.save(old_state, path)
                self._disk[old] = path

    def get(self, index: int) -> dict:
        with self._guard:
            if index in self._memory:
                self._memory.move_to_end(index)
                return self._memory[index]
            return torch.load(self._disk[index], weights_only=True)

    def drop(self, index: int) -> None:
        with self._guard:
            self._memory.pop(index, None)
            path = self._disk.pop(index, None)
        if path is not None:
            path.unlink(missing_ok=True)
