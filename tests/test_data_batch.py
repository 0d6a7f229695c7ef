"""Dict / BatchEncoding inputs through the data layer's batch helpers (xprune_nb/data/batch.py)."""

import pytest
import torch

from xprune_nb.core.errors import DataError
from xprune_nb.data.batch import batch_size, concat, take, to_device


def _enc(lengths, start=1):
    rows = [list(range(start + 10 * i, start + 10 * i + n)) for i, n in enumerate(lengths)]
    width = max(lengths)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def test_concat_pads_variable_lengths_per_name():
    a, b = _enc([2, 3]), _enc([5], start=100)
    both = concat([a, b], pad_values={"input_ids": 9})
    assert both["input_ids"].shape == (3, 5) and batch_size(both) == 3
    assert both["input_ids"][0].tolist() == [1, 2, 0, 9, 9]     # a's own padding kept, then 9
    assert both["attention_mask"].sum(1).tolist() == [2, 3, 5]  # masks pad with 0
    assert both["input_ids"][2].tolist() == [100, 101, 102, 103, 104]


def test_take_and_to_device_keep_the_container():
    inputs = _enc([2, 4, 3])
    picked = take(inputs, torch.tensor([2, 0]))
    assert picked["input_ids"].tolist() == [[21, 22, 23, 0], [1, 2, 0, 0]]
    assert take(inputs, [1])["attention_mask"].tolist() == [[1, 1, 1, 1]]
    moved = to_device((inputs, torch.tensor([0, 1, 0])), "cpu")
    assert isinstance(moved, tuple) and torch.equal(moved[0]["input_ids"], inputs["input_ids"])


def test_batch_encoding_stays_a_batch_encoding():
    transformers = pytest.importorskip("transformers")
    enc = transformers.BatchEncoding(_enc([2, 3]))
    assert isinstance(take(enc, [0]), transformers.BatchEncoding)
    assert isinstance(concat([enc, transformers.BatchEncoding(_enc([4]))]),
                      transformers.BatchEncoding)
    assert isinstance(to_device(enc, "cpu"), transformers.BatchEncoding)


def test_bad_inputs_are_refused_with_the_call_named():
    with pytest.raises(DataError, match=r"batch_size\(inputs=...\): the named inputs must have "
                                        "the same number of rows"):
        batch_size({"input_ids": torch.zeros(2, 3), "attention_mask": torch.zeros(3, 3)})
    with pytest.raises(DataError, match=r"concat\(parts=...\): nothing to join"):
        concat([])
    with pytest.raises(DataError, match=r"take\(inputs=...\): expected a tensor or a mapping"):
        take("text", [0])
    with pytest.raises(DataError, match=r"concat\(parts=...\): every batch must hold "
                                        "'attention_mask'"):
        concat([_enc([2]), {"input_ids": torch.zeros(1, 2, dtype=torch.long)}])


def test_tensor_splits_may_hold_named_inputs():
    from xprune_nb.data import as_split, batches, bundle, draw

    enc = _enc([2, 4, 3, 4, 2, 3])
    split = as_split((enc, torch.tensor([0, 1, 0, 1, 0, 1])))
    assert set(split.X) == {"input_ids", "attention_mask", "token_type_ids"} and len(split) == 6
    assert split.X["input_ids"].dtype == torch.long
    sizes = [batch_size(x) for x, _ in batches(split, 4)]
    assert sizes == [4, 2]
    x, y = draw(split, 4, seed=0)
    assert batch_size(x) == 4 and sorted(y.tolist()) == [0, 0, 1, 1]
    data = bundle(split, split, split)
    assert data.input_shape == (4,) and batch_size(data.example(2)) == 2
    with pytest.raises(DataError, match=r"labels must be a 1-D tensor with one class index per "
                                        r"example; got labels of shape \(2,\) for 6 inputs"):
        as_split((enc, torch.tensor([0, 1])))
