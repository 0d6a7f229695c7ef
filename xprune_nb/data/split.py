"""The one :class:`Split` and the one :class:`DataBundle` every data source becomes.

A bundled dataset, your tensors, loaders, a recipe's data file or factory all become a
:class:`DataBundle` (see :mod:`xprune_nb.data.convert`), so ``study.data`` has the type
:func:`xprune_nb.data.public.load` returns.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.errors import ConfigError
from .batch import take
from .checks import _names

__all__ = ["Split", "DataBundle", "SPLIT_NAMES"]

SPLIT_NAMES = ("train", "val", "test")
_SPLIT_NAMES = SPLIT_NAMES


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset, as plain tensors.

    ``eq=False`` keeps identity comparison: element-wise tensor equality has no single truth
    value, so a generated ``__eq__`` would raise instead of answering.

    Parameters
    ----------
    X : torch.Tensor or mapping of tensors
        float32 inputs, shape ``(N, *input_shape)`` (integer token ids stay int64); or named
        inputs of a token model (``input_ids``, ``attention_mask``...), each ``(N, ...)``.
    y : torch.Tensor
        int64 class labels, shape ``(N,)``.
    index : torch.Tensor or None
        int64 positions of these rows in the full, unsplit dataset (``None`` when the split was
        built by hand). Lets you trace an example back to its source and check splits are disjoint.
    groups : torch.Tensor or None
        int64 sensitive-group label of every example (``DataBundle.group_names`` names them), or
        ``None``. Never fed to the model: only per-group metrics read it.

    Examples
    --------
    >>> import torch
    >>> s = Split(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))
    >>> len(s), s.X.shape
    (4, torch.Size([4, 2]))
    """

    X: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor | None = None
    groups: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def class_counts(self, num_classes: int | None = None) -> list[int]:
        """Number of examples of each class, in class order.

        Examples
        --------
        >>> import torch
        >>> Split(torch.zeros(3, 2), torch.tensor([0, 1, 1])).class_counts()
        [1, 2]
        """
        return torch.bincount(self.y, minlength=num_classes or 0).tolist()

    def loader(
        self, batch_size: int = 64, shuffle: bool = False, seed: int = 0
    ) -> torch.utils.data.DataLoader:
        """A DataLoader over this split; shuffling is seeded so epochs repeat bit for bit.

        Examples
        --------
        >>> import torch
        >>> s = Split(torch.zeros(10, 2), torch.zeros(10, dtype=torch.int64))
        >>> [len(xb) for xb, yb in s.loader(batch_size=4)]
        [4, 4, 2]
        """
        generator = torch.Generator().manual_seed(seed)
        dataset = torch.utils.data.TensorDataset(self.X, self.y)
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, generator=generator
        )


@dataclass(frozen=True, eq=False)
class DataBundle:
    """A dataset split into train, validation and test parts, with its metadata.

    Attributes
    ----------
    name : str
        Dataset name as given to :func:`load`.
    train, val, test : Split
        The three disjoint, class-stratified splits.
    input_shape : tuple of int
        Shape of one example (``(1, 8, 8)`` for digits, ``(30,)`` for breast_cancer...).
    num_classes : int
        Number of classes; labels are ``0 .. num_classes - 1``.
    class_names : list of str
        Human-readable name of each class, indexed by label.
    feature_names : list of str or None
        Name of each input feature for tabular and toy data; ``None`` for images.
    kind : str
        ``"image"``, ``"tabular"`` or ``"toy"``.
    source : dict
        ``{"name": ..., "seed": ..., **options}`` with every option resolved, so that
        ``load(**source)`` rebuilds exactly this bundle.
    mean, std : torch.Tensor or None
        Per-feature statistics of the train split used to standardise the inputs, or ``None`` when
        the inputs were not standardised. :meth:`denormalize` maps inputs back to raw units.
    description : str
        One line about where the data comes from.

    Examples
    --------
    >>> from xprune_nb.data.public import load
    >>> data = load("wine")
    >>> data.kind, data.input_shape, data.class_names
    ('tabular', (13,), ['class_0', 'class_1', 'class_2'])
    >>> sorted(data.splits())
    ['test', 'train', 'val']
    """

    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: list[str]
    feature_names: list[str] | None
    kind: str
    source: dict[str, Any]
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    description: str = ""
    #: for a study's data: which split stands in for a missing one (e.g. ``{"val": "test"}``)
    split_names: dict[str, str] = field(default_factory=dict)
    #: for a study's data: ``{"seed", "eval_samples", "score_samples"}`` it was sampled with
    sampling: dict[str, Any] = field(default_factory=dict)

    @property
    def streamed(self) -> bool:
        """True when a split is the user's own loader or dataset (kept, never copied whole)."""
        return any(not isinstance(s, Split) for s in self.splits().values())

    def example(self, n: int = 2):
        """Inputs of ``n`` training examples (the first ``n`` of a streamed split's sample)."""
        train = self.train
        return take(train.X, slice(0, n)) if isinstance(train, Split) else train.sample(n)[0]

    def describe(self) -> dict:
        """What the data is, not a copy of it: its bundled source, or per split its type and
        size (what a saved study records for data it cannot store)."""
        splits = {name: (s.describe() if hasattr(s, "describe") else
                         {"type": "tensors", "size": len(s), "limit": len(s)})
                  for name, s in self.splits().items()}
        return {"name": self.name, "source": dict(self.source), "splits": splits,
                "split_names": dict(self.split_names), "sampling": dict(self.sampling)}
    #: names of the sensitive groups (``Split.groups`` indexes them); ``None`` without groups
    group_names: list[str] | None = None

    def splits(self) -> dict[str, Split]:
        """The three splits by name: ``{"train": ..., "val": ..., "test": ...}``."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def renamed(self, *, feature_names=None, class_names=None, call: str = "Study"
                ) -> DataBundle:
        """A copy with the given feature and class names (checked against the data)."""
        import dataclasses

        changes = {}
        if class_names is not None:
            changes["class_names"] = _names(class_names, self.num_classes, call, "class_names",
                                            "classes")
        if feature_names is not None:
            width = int(self.train.X[0].numel())
            changes["feature_names"] = _names(feature_names, width, call, "feature_names",
                                              "features per example")
        return dataclasses.replace(self, **changes) if changes else self

    def split(self, name: str) -> Split:
        """One split by name (``"train"``, ``"val"`` or ``"test"``).

        Examples
        --------
        >>> from xprune_nb.data.public import load
        >>> len(load("moons", n_samples=100).split("val"))
        20
        """
        if name not in _SPLIT_NAMES:
            raise ConfigError.unknown_name("DataBundle.split", "name", _SPLIT_NAMES, name)
        return self.splits()[name]

    def denormalize(self, X: torch.Tensor) -> torch.Tensor:
        """Undo the standardisation, giving inputs in their original units.

        Returns ``X`` unchanged when the bundle was not standardised.

        Examples
        --------
        >>> from xprune_nb.data.public import load
        >>> data = load("breast_cancer")
        >>> raw = data.denormalize(data.train.X)
        >>> bool(raw.mean(0).allclose(data.mean, rtol=1e-4))
        True
        """
        if self.mean is None or self.std is None:
            return X
        return X * self.std + self.mean

    def summary(self) -> Any:
        """Examples per class and split, as a pandas DataFrame (classes as rows).

        Examples
        --------
        >>> from xprune_nb.data.public import load
        >>> load("moons", n_samples=100).summary().loc["total"].tolist()
        [60, 20, 20]
        """
        import pandas as pd  # lazy: pandas costs import time that most calls never need

        counts = {
            name: split.class_counts(self.num_classes) for name, split in self.splits().items()
        }
        frame = pd.DataFrame(counts, index=list(self.class_names))
        frame.loc["total"] = frame.sum()
        return frame

    def _header(self) -> str:
        sizes = ", ".join(f"{name}={len(split)}" for name, split in self.splits().items())
        return (
            f"DataBundle({self.name!r}, kind={self.kind!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, {sizes})"
        )

    def __repr__(self) -> str:
        return self._header()

    def _repr_html_(self) -> str:
        options = {k: v for k, v in self.source.items() if k != "name"}
        options_text = ", ".join(f"{k}={v!r}" for k, v in options.items())
        return (
            f"<div><b>{html.escape(self.name)}</b> ({html.escape(self.kind)}): "
            f"{html.escape(self.description)}<br>"
            f"input shape {self.input_shape}, {self.num_classes} classes; "
            f"options: {html.escape(options_text)}</div>" + self.summary().to_html()
        )
