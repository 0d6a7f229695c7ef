"""Compressed storage of masked (unstructured) models: what weight pruning really saves on disk.

Dense kernels gain no speed from masks, but a file does not have to store the zeros. Each
tensor of the model's state is stored in whichever of two encodings is smaller:

* ``dense``: the tensor as is;
* ``bitmask``: one bit per element saying where the kept values are (``torch.uint8``, eight
  elements a byte) and the kept values, in order, in the tensor's own dtype.

A masked parameter (``weight_orig`` + ``weight_mask`` from ``torch.nn.utils.prune``) is always
stored as its mask and the kept values, so the mask is restored exactly even where a kept
weight happens to be zero. At 50% sparsity a float32 weight takes 1/8 + 1/2 of its dense size,
at 90% 1/8 + 1/10. The file is a plain ``torch.save`` of tensors and plain data, so it opens
with ``torch.load(weights_only=True)`` and loading never runs code.

Examples
--------
>>> import tempfile, torch
>>> from torch import nn
>>> from torch.nn.utils import prune
>>> net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
>>> _ = prune.l1_unstructured(net[0], "weight", amount=0.9)
>>> size = save_compressed(net, tempfile.mkdtemp() + "/net.xpz")
>>> size.ratio < 0.4
True
>>> fresh = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
>>> x = torch.randn(3, 64)
>>> bool(torch.equal(load_compressed(size.path, fresh)(x), net(x)))
True
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.atomic import check_target, torch_save
from ..core.errors import ConfigError, StudyFileError

__all__ = ["save_compressed", "load_compressed", "read_compressed", "compress_state",
           "decompress_state", "CompressedSize", "FORMAT", "VERSION"]

FORMAT = "xprune_nb.compressed"
VERSION = 1
_BITS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def _pack(mask: torch.Tensor) -> torch.Tensor:
    flat = mask.reshape(-1).bool()
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8).to(torch.uint8) * _BITS).sum(1, dtype=torch.uint8)


def _unpack(packed: torch.Tensor, numel: int) -> torch.Tensor:
    bits = (packed.reshape(-1, 1) & _BITS) != 0
    return bits.reshape(-1)[:numel]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def compress_state(model: nn.Module) -> dict:
    """The compressed form of ``model``'s state, plain data and tensors only.

    ``entries`` maps each name to its shape, dtype, encoding and place in the shared buffers:
    ``values`` (one flat tensor per dtype, every tensor's stored values one after the other)
    and ``bits`` (one ``uint8`` tensor holding every bitmask). Sharing the buffers keeps the
    file's per-tensor overhead (one zip record each) out of the comparison with dense.
    Masked parameters are stored under their own name (``layer.weight``) as mask + kept
    values and listed in ``masked``.
    """
    state = model.state_dict()
    entries, masked = {}, []
    values: dict[str, list[torch.Tensor]] = {}
    sizes: dict[str, int] = {}
    bits: list[torch.Tensor] = []
    n_bits = 0
    for key, value in state.items():
        if key.endswith("_mask") and key[:-5] + "_orig" in state:
            continue
        value = value.detach().cpu()
        keep, name = None, key
        if key.endswith("_orig") and key[:-5] + "_mask" in state:
            name = key[:-5]
            masked.append(name)
            keep = state[name + "_mask"].detach().cpu().bool()
        forced = keep is not None
        if keep is None:
            keep = value != 0
        dtype = _dtype_name(value.dtype)
        entry = {"shape": list(value.shape), "dtype": dtype,
                 "offset": sizes.get(dtype, 0)}
        bitmask_bytes = (value.numel() + 7) // 8 + int(keep.sum()) * value.element_size()
        if forced or bitmask_bytes < value.numel() * value.element_size():
            stored = value.reshape(-1)[keep.reshape(-1)]
            packed = _pack(keep)
            entry.update(encoding="bitmask", bit_offset=n_bits)
            bits.append(packed)
            n_bits += packed.numel()
        else:
            stored = value.reshape(-1)
            entry.update(encoding="dense")
        entry["count"] = stored.numel()
        values.setdefault(dtype, []).append(stored)
        sizes[dtype] = entry["offset"] + stored.numel()
        entries[name] = entry
    return {"masked": masked, "entries": entries,
            "values": {k: torch.cat(v) for k, v in values.items()},
            "bits": torch.cat(bits) if bits else torch.zeros(0, dtype=torch.uint8)}


def _index(value) -> int:
    """A stored size or offset: a non-negative int (a crafted file may hold anything)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a size")
    return value


def decompress_state(blob: dict, call: str = "decompress_state") -> dict[str, torch.Tensor]:
    """The state dict stored by :func:`compress_state` (masked parameters as ``_orig`` and
    ``_mask`` tensors, masked positions of ``_orig`` being zero)."""
    state = {}
    entries, masked = blob.get("entries", {}), blob.get("masked", [])
    if not isinstance(entries, dict) or not isinstance(masked, list) or not isinstance(
            blob.get("values"), dict) or not isinstance(blob.get("bits"), torch.Tensor):
        raise StudyFileError(f"{call}: the file is damaged: expected 'entries', 'masked', "
                             "'values' and 'bits' as written by save_compressed.")
    masked = set(map(str, masked))
    for name, entry in entries.items():
        try:
            dtype = getattr(torch, str(entry["dtype"]), None)
            if not isinstance(dtype, torch.dtype):   # the file names a dtype; nothing else
                raise ValueError(f"unknown dtype {entry['dtype']!r}")
            shape = [_index(d) for d in entry["shape"]]
            numel = int(torch.Size(shape).numel())
            start, count = _index(entry["offset"]), _index(entry["count"])
            stored = blob["values"][entry["dtype"]][start:start + count].to(dtype)
            if len(stored) != count:
                raise ValueError("the values buffer is too short")
            # sizes are checked against the buffers the file really holds before anything
            # of the declared shape is allocated: a crafted shape cannot ask for terabytes
            if entry["encoding"] == "dense":
                if count != numel:
                    raise ValueError(f"{count} values for a tensor of {numel}")
                values, keep = stored.reshape(shape), None
            elif entry["encoding"] == "bitmask":
                first, size = _index(entry["bit_offset"]), (numel + 7) // 8
                packed = blob["bits"][first:first + size]
                if len(packed) != size:
                    raise ValueError("the bitmask buffer is too short")
                keep = _unpack(packed, numel)
                if int(keep.sum()) != count:
                    raise ValueError(f"the mask keeps {int(keep.sum())} values, the file "
                                     f"holds {count}")
                flat = torch.zeros(numel, dtype=dtype)
                flat[keep] = stored
                values, keep = flat.reshape(shape), keep.reshape(shape)
            else:
                raise ValueError(f"unknown encoding {entry['encoding']!r}")
        except (KeyError, TypeError, RuntimeError, ValueError, AttributeError,
                IndexError) as exc:
            raise StudyFileError(f"{call}: the entry {name!r} of the file is damaged "
                                 f"({type(exc).__name__}: {exc}).") from exc
        if name in masked:
            if keep is None:
                raise StudyFileError(f"{call}: the masked parameter {name!r} has no mask.")
            state[name + "_orig"] = values
            state[name + "_mask"] = keep.to(values.dtype)
        else:
            state[name] = values
    return state


@dataclass(frozen=True)
class CompressedSize:
    """Bytes on disk of a compressed file, next to the same weights stored densely."""

    path: Path
    bytes: int
    dense_bytes: int
    sparsity: float

    @property
    def ratio(self) -> float:
        """Compressed size / dense size."""
        return self.bytes / self.dense_bytes if self.dense_bytes else float("nan")

    def as_dict(self) -> dict:
        return {"path": str(self.path), "bytes": self.bytes, "dense_bytes": self.dense_bytes,
                "ratio": self.ratio, "sparsity": self.sparsity}

    def __repr__(self) -> str:
        return (f"CompressedSize({self.bytes:,} bytes on disk vs {self.dense_bytes:,} dense = "
                f"{self.ratio:.1%}, weight sparsity {self.sparsity:.1%})")


def _dense_bytes(model: nn.Module) -> int:
    """Size of ``torch.save`` of the model's effective weights, stored densely without masks
    (what a deployment would ship without compression)."""
    state = model.state_dict()
    dense = {}
    for key, value in state.items():
        if key.endswith("_mask") and key[:-5] + "_orig" in state:
            continue
        if key.endswith("_orig") and key[:-5] + "_mask" in state:
            dense[key[:-5]] = value * state[key[:-5] + "_mask"]
        else:
            dense[key] = value
    buf = io.BytesIO()
    torch.save(dense, buf)
    return len(buf.getvalue())


def _sparsity(model: nn.Module) -> float:
    from ..measure.metrics import layer_sparsity

    layers = layer_sparsity(model).values()
    total = sum(v["params"] for v in layers)
    return sum(v["params"] - v["nonzero"] for v in layers) / total if total else 0.0


def save_compressed(model: nn.Module, path: str | Path, *,
                    meta: dict | None = None) -> CompressedSize:
    """Write ``model``'s weights to ``path`` with the zeros left out.

    Parameters
    ----------
    model : nn.Module
        Typically a model pruned with ``granularity="weight"`` (masks); any model works.
    path : str or Path
        The file to write (written to a temporary name, then renamed).
    meta : dict, optional
        Plain data stored alongside (e.g. the checkpoint's architecture and structure).

    Returns
    -------
    CompressedSize
        The file's size on disk, the size of the same weights stored densely, and their
        ratio.

    Examples
    --------
    >>> import tempfile
    >>> from torch import nn
    >>> from torch.nn.utils import prune
    >>> layer = prune.l1_unstructured(nn.Linear(256, 256), "weight", amount=0.8)
    >>> size = save_compressed(layer, tempfile.mkdtemp() + "/layer.xpz")
    >>> round(size.sparsity, 2), size.ratio < 0.35
    (0.8, True)
    """
    call = "save_compressed"
    if not isinstance(model, nn.Module):
        raise ConfigError.bad_value(call, "model", "a torch.nn.Module", model)
    path = check_target(path, call=call)   # a folder, a device or a pipe: refused first
    if meta is not None and not isinstance(meta, dict):
        raise ConfigError.bad_value(call, "meta", "a dict of plain data or None", meta)
    payload = {"format": FORMAT, "version": VERSION, **compress_state(model),
               "meta": dict(meta or {})}
    torch_save(payload, path, call=call)   # atomic: a failure leaves the previous file
    return CompressedSize(path, path.stat().st_size, _dense_bytes(model), _sparsity(model))


def read_compressed(path: str | Path, call: str = "load_compressed") -> dict:
    """The file's contents as plain data (never runs code)."""
    from ..core.reading import read_torch_file

    payload = read_torch_file(path, call=call, kind="compressed model")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise StudyFileError(f"{call}(path=...): {str(path)!r} was not written by "
                             "xprune_nb's save_compressed.")
    if payload.get("version") != VERSION:
        raise StudyFileError(f"{call}(path=...): version {payload.get('version')!r} is not "
                             f"supported (this xprune_nb reads version {VERSION}).")
    return payload


def load_compressed(path: str | Path, model: nn.Module) -> nn.Module:
    """Load weights saved by :func:`save_compressed` into ``model`` (in place) and return it.

    ``model`` has the architecture of the saved one (for a channel-pruned model: rebuilt with
    the same structure, e.g. by :func:`xprune_nb.load_pruned`). Masks are added to the layers
    that had them. Every tensor is checked against the model before anything is changed, so
    a file that does not fit leaves ``model`` as it was.

    Examples
    --------
    >>> import tempfile, torch
    >>> from torch import nn
    >>> from torch.nn.utils import prune
    >>> layer = prune.random_unstructured(nn.Linear(8, 4), "weight", amount=0.5)
    >>> size = save_compressed(layer, tempfile.mkdtemp() + "/layer.xpz")
    >>> fresh = load_compressed(size.path, nn.Linear(8, 4))
    >>> bool(torch.equal(fresh.weight_mask, layer.weight_mask))
    True
    """
    call = "load_compressed"
    if not isinstance(model, nn.Module):
        raise ConfigError.bad_value(call, "model", "a torch.nn.Module", model)
    payload = read_compressed(path, call)
    state = decompress_state(payload, call)
    masked = [str(n) for n in payload.get("masked", [])]
    current = model.state_dict()
    modules = dict(model.named_modules())
    expected = dict(current)
    for name in masked:
        module_name, _, param = name.rpartition(".")
        module = modules.get(module_name)
        if module is None or not (hasattr(module, param) or hasattr(module, param + "_orig")):
            raise StudyFileError(f"{call}: the file masks {name!r}, which the model lacks.")
        if name in expected:   # the model has no mask there yet: it will get one
            shape = expected.pop(name).shape
            expected[name + "_orig"] = expected[name + "_mask"] = torch.empty(shape)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or extra or wrong:
        raise StudyFileError(f"{call}: {str(path)!r} does not fit the model (missing "
                             f"{missing[:5]}, unexpected {extra[:5]}, other shapes "
                             f"{wrong[:5]}); the model is unchanged.")
    from ..models.mechanisms.masks import ensure_masks, refresh_masked_weights

    ensure_masks(model, [n.rpartition(".")[0] if n.endswith(".weight") else
                         f"{n.rpartition('.')[0]}:{n.rpartition('.')[2]}" for n in masked])
    model.load_state_dict(state)
    refresh_masked_weights(model)
    return model
