"""Bounded storage of model weights per history step: recent ones in memory, older on disk.

At most ``max_in_memory`` snapshots and at most ``memory_bytes`` bytes of them stay in memory
(the most recent one always does); the rest are spilled, least recently used first, to
``directory`` (a temporary folder by default, removed with the store). A ResNet-50 (94 MB of
float32 weights) thus keeps 5 steps in memory under the default 512 MB, a ViT-B/16 (343 MB)
one. A snapshot ``put`` with ``shared=True`` (the untouched original's weights) is not copied
and costs no memory. Files are written with ``torch.save`` of plain CPU tensors and read with
``weights_only=True``, so a study made on a GPU loads on a CPU.
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

    def __init__(self, max_in_memory: int = 8, directory: str | Path | None = None,
                 memory_bytes: int = 512 * 2**20) -> None:
        self.max_in_memory = max(1, int(max_in_memory))
        self.memory_bytes = int(memory_bytes)
        self._memory: OrderedDict[int, dict] = OrderedDict()
        self._shared: dict[int, dict] = {}
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
        return index in self._memory or index in self._disk or index in self._shared

    @staticmethod
    def _bytes(state: dict) -> int:
        return sum(v.numel() * v.element_size() for v in state.values())

    def put(self, index: int, state: dict, *, shared: bool = False) -> None:
        """Keep ``state`` for step ``index`` (a CPU copy; ``shared``: the tensors themselves,
        for weights that never change, such as the study's untouched original)."""
        if shared and all(v.device.type == "cpu" for v in state.values()):
            with self._guard:
                self.drop(index)
                self._shared[index] = dict(state)
            return
        copied = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
        with self._guard:
            self.drop(index)
            self._memory[index] = copied
            self._memory.move_to_end(index)
            held = sum(self._bytes(v) for v in self._memory.values())
            while len(self._memory) > 1 and (len(self._memory) > self.max_in_memory
                                             or held > self.memory_bytes):
                old, old_state = self._memory.popitem(last=False)
                held -= self._bytes(old_state)
                path = self._directory() / f"step_{old}.pt"
                torch.save(old_state, path)
                self._disk[old] = path

    def shares(self, index: int) -> bool:
        """Whether step ``index`` holds tensors it shares (the untouched original's own)."""
        with self._guard:
            return index in self._shared

    def get(self, index: int) -> dict:
        with self._guard:
            if index in self._shared:
                return self._shared[index]
            if index in self._memory:
                self._memory.move_to_end(index)
                return self._memory[index]
            return torch.load(self._disk[index], weights_only=True, map_location="cpu")

    def drop(self, index: int) -> None:
        with self._guard:
            self._memory.pop(index, None)
            self._shared.pop(index, None)
            path = self._disk.pop(index, None)
        if path is not None:
            path.unlink(missing_ok=True)
