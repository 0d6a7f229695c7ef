"""Train every model of the zoo and write the weights shipped in ``xprune_nb/models/weights``.

Each model is trained on the train split of its dataset (seed 0) with Adam; the epoch with the
best validation accuracy is kept (ties go to the earlier epoch), then its test accuracy is
measured once and recorded in ``xprune_nb/models/weights/accuracy.json``, which
``xprune_nb.models.zoo.info`` reads. Everything is seeded and single-threaded, so a rerun on the
same platform writes the same weights.

Usage::

    python scripts/train_zoo.py                   # all models
    python scripts/train_zoo.py --only digits_cnn # one model; other records are kept
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from xprune_nb.data import public as datasets
from xprune_nb.models import zoo


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    lr: float
    batch_size: int = 64
    weight_decay: float = 0.0
    seed: int = 0


# Chosen by hand for accuracy within well under a minute per model on one CPU thread.
CONFIGS: dict[str, TrainConfig] = {
    "digits_cnn": TrainConfig(epochs=30, lr=3e-3, weight_decay=1e-4),
    "digits_resnet": TrainConfig(epochs=30, lr=3e-3, weight_decay=1e-4),
    "digits_concat": TrainConfig(epochs=30, lr=3e-3, weight_decay=1e-4),
    "digits_transformer": TrainConfig(epochs=120, lr=2e-3, weight_decay=1e-4),
    "digits_vit": TrainConfig(epochs=100, lr=2e-3, weight_decay=1e-4),
    "digits_lstm": TrainConfig(epochs=60, lr=5e-3, weight_decay=1e-4),
    "boxes_vit": TrainConfig(epochs=40, lr=2e-3, weight_decay=1e-4),
    "tabular_mlp": TrainConfig(epochs=100, lr=1e-3, batch_size=32, weight_decay=1e-4),
    "toy_mlp": TrainConfig(epochs=60, lr=3e-3, batch_size=32),
}


def accuracy(model: nn.Module, split: datasets.Split) -> float:
    """Accuracy over the whole split in one batch: the same computation tests and info() use."""
    model.eval()
    with torch.no_grad():
        return (model(split.X).argmax(dim=1) == split.y).float().mean().item()


def train(name: str, config: TrainConfig) -> dict:
    meta = zoo.info(name)
    data = datasets.load(meta["dataset"], seed=config.seed, **meta["dataset_options"])
    model = zoo.build(name, seed=config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    loss_fn = nn.CrossEntropyLoss()
    loader = data.train.loader(batch_size=config.batch_size, shuffle=True, seed=config.seed)

    torch.manual_seed(config.seed)
    best_val, best_state, best_epoch = -1.0, None, -1
    start = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()
        scheduler.step()
        val = accuracy(model, data.val)
        if val > best_val:
            best_val, best_state, best_epoch = val, copy.deepcopy(model.state_dict()), epoch + 1
    seconds = time.perf_counter() - start

    model.load_state_dict(best_state)
    model.eval()
    path = zoo.weights_path(name)
    torch.save(model.state_dict(), path)
    return {
        "test_accuracy": accuracy(model, data.test),
        "val_accuracy": best_val,
        "train_accuracy": accuracy(model, data.train),
        "params": sum(p.numel() for p in model.parameters()),
        "weights_bytes": path.stat().st_size,
        "training": {
            **asdict(config),
            "best_epoch": best_epoch,
            "seconds": round(seconds, 1),
            "optimizer": "Adam + cosine annealing",
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="+", choices=zoo.available(), help="train only these models"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # two busy cores make torch several times slower with more threads

    accuracy_file = zoo.WEIGHTS_DIR / "accuracy.json"
    records = json.loads(accuracy_file.read_text()) if accuracy_file.is_file() else {}
    zoo.WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)

    header = ("model", "dataset", "params", "train", "val", "test", "s")
    print("{:<20} {:<14} {:>7} {:>7} {:>7} {:>7} {:>6}".format(*header))
    for name in args.only or zoo.available():
        record = train(name, CONFIGS[name])
        records[name] = record
        print(
            f"{name:<20} {zoo.info(name)['dataset']:<14} {record['params']:>7} "
            f"{record['train_accuracy']:>7.4f} {record['val_accuracy']:>7.4f} "
            f"{record['test_accuracy']:>7.4f} {record['training']['seconds']:>6.1f}",
            flush=True,
        )
        # write after each model so an interrupted run keeps what it finished
        accuracy_file.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
