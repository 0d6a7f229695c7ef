"""The model zoo: small models with trained weights shipped inside the package.

Each entry pairs an architecture from :mod:`xprune_nb.models` with the dataset it was trained on.
Weights are plain state dicts in ``xprune_nb/models/weights/NAME.pt``, loaded with
``torch.load(weights_only=True)`` so that loading never runs code; their test accuracies, measured
by ``scripts/train_zoo.py`` when it wrote them, are in ``xprune_nb/models/weights/accuracy.json``.

Examples
--------
>>> import xprune_nb.models.zoo as zoo
>>> model = zoo.load("toy_mlp")
>>> zoo.info("toy_mlp")["dataset"], model.training
('moons', False)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import models
from ..core.errors import ConfigError, StudyFileError
from . import case_study as _case_study

__all__ = ["load", "available", "info", "build", "weights_path", "WEIGHTS_DIR"]

#: Folder holding the shipped state dicts and ``accuracy.json``.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_ACCURACY_FILE = WEIGHTS_DIR / "accuracy.json"


@dataclass(frozen=True)
class _Entry:
    architecture: type[nn.Module]
    dataset: str
    description: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, _Entry] = {
    "digits_cnn": _Entry(
        models.DigitsCNN,
        "digits",
        "two Conv-BN-ReLU-MaxPool blocks (16, 32 channels) and a 128-64-10 classifier",
    ),
    "digits_resnet": _Entry(
        models.DigitsResNet,
        "digits",
        "stem conv and three basic residual blocks (identity, 1x1 projection, identity), "
        "global average pooling, linear head",
    ),
    "digits_concat": _Entry(
        models.DigitsConcat,
        "digits",
        "CNN with an inception-like channel concatenation and a depthwise-separable conv",
    ),
    "digits_transformer": _Entry(
        models.DigitsTransformer,
        "digits",
        "tiny transformer over the 8 image rows as tokens: 2 pre-norm encoder blocks, "
        "4 attention heads of width 8, mean pooling",
    ),
    "digits_vit": _Entry(
        models.DigitsViT,
        "digits",
        "Vision Transformer over 2x2 patches (16 tokens): 4 pre-norm blocks of width 32 on "
        "SDPAttention (4 heads of width 8, real head removal), mean pooling",
    ),
    "digits_lstm": _Entry(
        models.DigitsLSTM,
        "digits",
        "LSTM with 32 hidden units reading the 8 image rows as a sequence, linear head on "
        "the last step",
    ),
    "boxes_vit": _Entry(
        _case_study.BoxesViT,
        "digits_boxes",
        "the ViT of digits_vit over 4x4 patches of 16x16 canvases (16 tokens) where a digit sits "
        "among distractors, its box known: the ground truth of the ViT case study",
        kwargs={"image_size": 16, "patch": 4},
        dataset_options={"n_samples": 2000, "canvas": 16, "distractors": 2},
    ),
    "tabular_mlp": _Entry(
        models.TabularMLP,
        "breast_cancer",
        "MLP 30-64-32-2 on standardised breast cancer features",
    ),
    "toy_mlp": _Entry(
        models.ToyMLP,
        "moons",
        "MLP 2-64-64-2 on the 2-D moons problem",
    ),
}


def available() -> list[str]:
    """Names accepted by :func:`load` and :func:`info`, sorted.

    Examples
    --------
    >>> "digits_cnn" in available()
    True
    """
    return sorted(_REGISTRY)


def _entry(call: str, name: Any) -> _Entry:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError.unknown_name(call, "name", available(), name)
    return _REGISTRY[name]


def weights_path(name: str) -> Path:
    """Where the shipped weights of ``name`` live (the file may be missing before training).

    Examples
    --------
    >>> weights_path("digits_cnn").name
    'digits_cnn.pt'
    """
    _entry("zoo.weights_path", name)
    return WEIGHTS_DIR / f"{name}.pt"


def build(name: str, seed: int = 0) -> nn.Module:
    """A freshly initialised model of architecture ``name``, in eval mode.

    Initialisation runs under ``torch.manual_seed(seed)`` inside a forked RNG, so it is
    reproducible and leaves the caller's global random state untouched.

    Examples
    --------
    >>> a, b = build("toy_mlp"), build("toy_mlp")
    >>> bool(a.head.weight.equal(b.head.weight))
    True
    """
    entry = _entry("zoo.build", name)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError.bad_value("zoo.build", "seed", "a non-negative integer", seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = entry.architecture(**entry.kwargs)
    # lets a Study record where the architecture comes from, for save/load and exported scripts
    model._xprune_zoo_name = name
    return model.eval()


def load(name: str, pretrained: bool = True, seed: int = 0) -> nn.Module:
    """Load a zoo model, with its shipped trained weights by default.

    Parameters
    ----------
    name : str
        One of :func:`available`.
    pretrained : bool, default True
        Load the trained weights shipped in the package. ``False`` gives a freshly initialised
        model of the same architecture (seeded by ``seed``), e.g. to train from scratch.
    seed : int, default 0
        Seed of the fresh initialisation; ignored when ``pretrained`` is True.

    Returns
    -------
    torch.nn.Module
        The model in eval mode, on CPU. Its class lives in :mod:`xprune_nb.models`, so
        ``info(name)["architecture"]`` and ``info(name)["kwargs"]`` rebuild it.

    Raises
    ------
    ConfigError
        Unknown name, or ``pretrained`` not a bool.
    StudyFileError
        The weights file is missing or does not fit the architecture (retrain with
        ``python scripts/train_zoo.py``).

    Examples
    --------
    >>> import torch
    >>> from xprune_nb import datasets
    >>> model = load("digits_cnn")
    >>> data = datasets.load("digits")
    >>> with torch.no_grad():
    ...     accuracy = (model(data.test.X).argmax(1) == data.test.y).float().mean().item()
    >>> abs(accuracy - info("digits_cnn")["test_accuracy"]) < 1e-6
    True
    """
    entry = _entry("zoo.load", name)
    if not isinstance(pretrained, bool):
        raise ConfigError.bad_value("zoo.load", "pretrained", "True or False", pretrained)
    model = build(name, seed=seed)
    if not pretrained:
        return model
    path = WEIGHTS_DIR / f"{name}.pt"
    if not path.is_file():
        raise StudyFileError(
            f"zoo.load(name={name!r}): weights file {str(path)!r} is missing; "
            "recreate it with: python scripts/train_zoo.py --only " + name
        )
    try:
        # weights_only=True: a shipped file must never be able to run code when loaded
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # any unpickling or key/shape mismatch means the file is unusable
        detail = " ".join(str(exc).split())  # one line: torch's message spans several
        raise StudyFileError(
            f"zoo.load(name={name!r}): weights file {str(path)!r} does not fit "
            f"{entry.architecture.__name__} ({detail}); recreate it with: "
            "python scripts/train_zoo.py --only " + name
        ) from exc
    return model.eval()


@lru_cache(maxsize=1)
def _recorded() -> dict[str, dict[str, Any]]:
    if not _ACCURACY_FILE.is_file():
        return {}
    return json.loads(_ACCURACY_FILE.read_text(encoding="utf-8"))


def info(name: str) -> dict[str, Any]:
    """What a zoo model is, what it was trained on, and how well it does.

    Returns
    -------
    dict
        ``name``, ``description``, ``dataset`` and ``dataset_options`` (pass them to
        :func:`xprune_nb.data.public.load` to get the data it was trained and evaluated on),
        ``architecture`` (import path of the class), ``kwargs`` (its constructor arguments),
        ``params`` (parameter count), ``test_accuracy`` and ``val_accuracy`` (recorded when the
        shipped weights were trained; ``None`` if never trained), and ``training`` (the
        settings used then, or ``None``).

    Examples
    --------
    >>> meta = info("tabular_mlp")
    >>> meta["dataset"], meta["architecture"], meta["params"]
    ('breast_cancer', 'xprune_nb.models.TabularMLP', 4130)
    >>> meta["test_accuracy"] > 0.9
    True
    """
    entry = _entry("zoo.info", name)
    with torch.random.fork_rng(devices=[]):
        # counting parameters needs an instance; fork the RNG so info() has no side effects
        params = sum(p.numel() for p in entry.architecture(**entry.kwargs).parameters())
    record = _recorded().get(name, {})
    return {
        "name": name,
        "description": entry.description,
        "dataset": entry.dataset,
        "dataset_options": dict(entry.dataset_options),
        "architecture": f"{entry.architecture.__module__}.{entry.architecture.__qualname__}",
        "kwargs": dict(entry.kwargs),
        "params": params,
        "test_accuracy": record.get("test_accuracy"),
        "val_accuracy": record.get("val_accuracy"),
        "training": record.get("training"),
    }
