"""Pruned Hugging Face models back to Hugging Face: save_pretrained / load_pruned round trips on
small random configs (BERT, DistilBERT, RoBERTa, ViT, GPT-2, Llama-style)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError, StudyFileError
from xprune_nb.models.mechanisms.model_tools import logits_of
from xprune_nb.record.io.pretrained import PRUNING_KEY

hf = pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore")


def _text(n=24, length=7, vocab=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, length), generator=gen)
    return ids, (ids[:, 0] % 2).long()


def _bert(layers=3):
    torch.manual_seed(0)
    return hf.BertForSequenceClassification(hf.BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=24, max_position_embeddings=16, num_labels=2)).eval()


def _distilbert():
    torch.manual_seed(0)
    return hf.DistilBertForSequenceClassification(hf.DistilBertConfig(
        vocab_size=40, dim=16, n_layers=2, n_heads=4, hidden_dim=24,
        max_position_embeddings=16, num_labels=2)).eval()


def _roberta():
    torch.manual_seed(0)
    return hf.RobertaForSequenceClassification(hf.RobertaConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=24, max_position_embeddings=20, num_labels=2, pad_token_id=1)).eval()


def _gpt2():
    torch.manual_seed(0)
    return hf.GPT2ForSequenceClassification(hf.GPT2Config(
        vocab_size=40, n_embd=16, n_layer=3, n_head=4, n_positions=16, num_labels=2,
        pad_token_id=0, bos_token_id=0, eos_token_id=0)).eval()


def _llama():
    torch.manual_seed(0)
    return hf.LlamaForSequenceClassification(hf.LlamaConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, head_dim=4, intermediate_size=24, num_labels=2,
        pad_token_id=0, bos_token_id=0, eos_token_id=0)).eval()


def _vit():
    torch.manual_seed(0)
    return hf.ViTForImageClassification(hf.ViTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=3,
        num_attention_heads=4, intermediate_size=24, num_labels=3)).eval()


def _study(model, data, steps):
    study = xp.Study(model, train=data, seed=0)
    for granularity, amount, scope in steps:
        study.score("magnitude", granularity=granularity)
        study.prune(amount, scope=scope)
    return study


def _logits(model, x):
    with torch.no_grad():
        return logits_of(model.eval()(x))


def _round_trip(study, x, tmp_path):
    folder = study.save_pretrained(tmp_path / "hf")
    assert {"config.json", "model.safetensors"} <= {p.name for p in folder.iterdir()}
    record = json.loads((folder / "config.json").read_text())[PRUNING_KEY]
    loaded = xp.load_pruned(folder)
    assert (_logits(loaded, x) - _logits(study.model, x)).abs().max() <= 1e-5
    # the live model's own save_pretrained writes a folder that loads right too
    study.model.save_pretrained(tmp_path / "own")
    again = xp.load_pruned(tmp_path / "own")
    assert (_logits(again, x) - _logits(study.model, x)).abs().max() <= 1e-5
    return folder, record, loaded


@pytest.mark.parametrize("build", [_bert, _distilbert, _roberta])
def test_uneven_heads_are_recorded_and_a_stock_load_says_what_to_call(build, tmp_path):
    ids, y = _text()
    study = _study(build(), (ids, y), [("head", 0.3, "global"), ("block", 0.5, "global")])
    folder, record, loaded = _round_trip(study, ids, tmp_path)
    assert not record["stock"] and record["heads_kept"] and record["layers_removed"]
    kept = sum(p.numel() for p in loaded.parameters())
    assert kept == sum(p.numel() for p in study.model.parameters())
    with pytest.raises(Exception, match=r"xprune_nb.load_pruned\(folder\)"):
        hf.AutoModelForSequenceClassification.from_pretrained(folder)


def test_heads_kept_are_original_indices_across_two_prunes(tmp_path):
    ids, y = _text()
    study = _study(_bert(2), (ids, y), [("head", 0.25, "layer"), ("head", 0.34, "layer")])
    _, record, _ = _round_trip(study, ids, tmp_path)
    for name, kept in record["heads_kept"].items():
        assert len(kept) == 2 and len(set(kept)) == 2 and all(0 <= h < 4 for h in kept)
        assert record["num_heads"][name] == 4


@pytest.mark.parametrize("build", [_bert, _gpt2])
def test_removed_layers_load_with_stock_from_pretrained(build, tmp_path):
    ids, y = _text()
    study = _study(build(), (ids, y), [("block", 0.34, "global")])
    folder, record, _ = _round_trip(study, ids, tmp_path)
    assert record["stock"] and len(record["layers_removed"]) == 1
    stock = hf.AutoModelForSequenceClassification.from_pretrained(folder)
    assert stock.config.num_hidden_layers == 2
    assert (_logits(stock, ids) - _logits(study.model, ids)).abs().max() <= 1e-5


def test_even_heads_with_head_dim_load_with_stock_from_pretrained(tmp_path):
    ids, y = _text()
    study = _study(_llama(), (ids, y), [("head", 0.5, "layer")])
    folder, record, _ = _round_trip(study, ids, tmp_path)
    assert record["stock"]
    stock = hf.AutoModelForSequenceClassification.from_pretrained(folder)
    assert stock.config.num_attention_heads == 2 and stock.config.head_dim == 4
    assert (_logits(stock, ids) - _logits(study.model, ids)).abs().max() <= 1e-5


def test_vit_heads_and_layers(tmp_path):
    x = torch.randn(24, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    study = _study(_vit(), (x, torch.arange(24) % 3), [("head", 0.3, "global"),
                                                         ("block", 0.34, "global")])
    _, record, loaded = _round_trip(study, x, tmp_path)
    assert not record["stock"] and record["input"]["shape"] == [1, 8, 8]


def test_masked_weights_are_saved_as_zeros_and_masks_come_back(tmp_path):
    ids, y = _text()
    study = _study(_bert(2), (ids, y), [("weight", 0.5, "global")])
    folder, record, loaded = _round_trip(study, ids, tmp_path)
    assert record["stock"] and record["masked"]
    layer = record["masked"][0]
    assert hasattr(loaded.get_submodule(layer), "weight_mask")
    stock = hf.AutoModelForSequenceClassification.from_pretrained(folder)
    assert (_logits(stock, ids) - _logits(study.model, ids)).abs().max() <= 1e-5


def test_unpruned_study_writes_a_plain_folder(tmp_path):
    ids, y = _text()
    study = xp.Study(_bert(2), train=(ids, y))
    folder, record, _ = _round_trip(study, ids, tmp_path)
    assert record["stock"] and not record["structure"]


def test_refusals(tmp_path):
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
    with pytest.raises(ConfigError, match=r"Study.save_pretrained\(model=.*Hugging Face"):
        study.save_pretrained(tmp_path / "x")
    ids, y = _text()
    bert = _study(_bert(2), (ids, y), [("head", 0.25, "layer")])
    folder = bert.save_pretrained(tmp_path / "hf")
    raw = json.loads((folder / "config.json").read_text())
    raw["architectures"] = ["os.system"]
    (folder / "config.json").write_text(json.dumps(raw))
    with pytest.raises(StudyFileError, match="not a model class of the transformers package"):
        xp.load_pruned(folder)
    assert xp.load_pruned(folder, model=_bert(2)) is not None   # the caller's class instead


def test_gpt2_heads_are_reported_with_the_reason():
    from xprune_nb.models.mechanisms.attention import find_heads

    groups, skipped = find_heads(_gpt2())
    assert not groups and skipped
    assert all("Conv1D c_attn is not supported" in why for why in skipped.values())


def test_gpt2_channels_refused_with_the_package_error_and_the_study_unchanged():
    """torch-pruning cannot trace GPT-2's Conv1D/concat graph; the user gets ModelError naming
    granularity='channel' and what to use instead, not a raw TypeError from inside it."""
    from xprune_nb.core.errors import ModelError

    ids, y = _text()
    study = xp.Study(_gpt2(), train=(ids, y), val=(ids, y), test=(ids, y), seed=0)
    before = {k: v.clone() for k, v in study.model.state_dict().items()}
    with pytest.raises(ModelError, match=r"granularity='channel'.*prunable\(\)"):
        study.score("magnitude", granularity="channel")
    assert len(study.history) == 1 and study.current == 0
    assert all(torch.equal(before[k], v) for k, v in study.model.state_dict().items())


@pytest.mark.slow
def test_onnx_names_inputs_as_forward_with_dynamic_batch_and_sequence(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from torch import nn

    from xprune_nb.export.onnx import export_onnx, onnx_session, run_onnx

    ids, y = _text(length=7)
    study = _study(_bert(2), (ids, y), [("head", 0.25, "layer")])
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    path = export_onnx(study.model, {"attention_mask": mask[:2], "input_ids": ids[:2]},
                       tmp_path / "bert.onnx")
    session = onnx_session(path)
    assert [(i.name, i.shape) for i in session.get_inputs()] == [
        ("input_ids", ["batch", "sequence"]), ("attention_mask", ["batch", "sequence"])]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    for length in (4, 11):   # two other lengths, the longer one right-padded
        x = torch.randint(1, 40, (3, length), generator=torch.Generator().manual_seed(length))
        m = torch.ones_like(x)
        x[0, length - 2:], m[0, length - 2:] = 0, 0
        with torch.no_grad():
            want = study.model(input_ids=x, attention_mask=m).logits
        got = run_onnx(session, {"input_ids": x, "attention_mask": m})
        assert (got - want).abs().max() <= 1e-4
    # vision keeps a dynamic batch axis, named after forward's parameter
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    session = onnx_session(export_onnx(net, torch.randn(2, 1, 6, 6), tmp_path / "v.onnx"))
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("input", ["batch", 1, 6, 6])]


def test_export_script_rebuilds_from_the_config_without_a_factory(tmp_path):
    import ast
    import runpy

    from tests.export_helpers import HOSTILE

    model = _bert(2)
    model.config.id2label = {0: HOSTILE, 1: "yes"}   # config strings are data, never code
    ids, y = _text()
    study = _study(model, (ids, y), [("head", 0.25, "global")])
    recipe = study.recipe()
    assert recipe.model["transformers"] == "BertForSequenceClassification"
    path = study.export_script(tmp_path / "prune_bert.py")
    text = path.read_text()
    tree = ast.parse(text)
    assert not any(isinstance(n, (ast.Import, ast.ImportFrom)) and "transformers" in ast.dump(n)
                   for n in ast.walk(tree))          # no factory module, no class pasted
    assert any(isinstance(n, ast.Constant) and n.value == HOSTILE for n in ast.walk(tree))
    runpy.run_path(str(path))["main"](["--out", str(tmp_path / "out"), "--quiet"])
    for saved in ("model.pt", "pretrained"):
        rebuilt = xp.load_pruned(tmp_path / "out" / saved)
        assert (_logits(rebuilt, ids) - _logits(study.model, ids)).abs().max() <= 1e-5
    # a recipe with another class name is refused before anything is imported
    bad = recipe.to_dict()
    bad["model"]["transformers"] = "os.system"
    with pytest.raises(ConfigError, match=r"model.transformers"):
        xp.Recipe.from_dict(bad)


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency", "attention_rollout",
                                    "shapley"])
def test_padded_batches_explain_each_row_as_if_unpadded(method):
    from xprune_nb.explain.token_compare import compare_token_saliency, compare_token_shapley

    torch.manual_seed(0)
    bert = hf.BertForSequenceClassification(hf.BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=24, max_position_embeddings=16, num_labels=2,
        attn_implementation="eager")).eval()
    ids, _ = _text(n=3, length=7)
    mask = torch.ones_like(ids)
    ids[1, 4:], mask[1, 4:] = 0, 0
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    alone = {k: v[1:2, :4] for k, v in batch.items()}

    def explain(x):
        if method == "shapley":
            return compare_token_shapley(bert, bert, x, labels=[1] * len(x["input_ids"]))
        return compare_token_saliency(bert, bert, x, method=method,
                                      labels=[1] * len(x["input_ids"]))

    padded, single = explain(batch), explain(alone)
    assert np.all(padded.before[1, 4:] == 0)                # padding gets no attribution
    np.testing.assert_allclose(padded.before[1, :4], single.before[0], atol=1e-6)
    assert padded.valid is not None and padded.shown(1)[0] == single.tokens[0]
    assert padded.to_frame()["text"][1] == " ".join(single.tokens[0])
    np.testing.assert_allclose(padded.deletion_before[1], single.deletion_before[0], atol=1e-6)


def test_drift_for_text_is_measured_on_real_tokens():
    from xprune_nb.explain.drift import probe_drift

    ids, y = _text(n=32)
    study = _study(_bert(2), (ids, y), [("head", 0.25, "global")])
    frame = study.drift().to_frame()
    assert frame["saliency_rank_correlation"].notna().all()      # step 0 included
    # a padded probe: each row's numbers are those of the sentence alone
    probe, labels = ids[:6].clone(), y[:6]
    mask = torch.ones_like(probe)
    probe[::2, 4:], mask[::2, 4:] = 0, 0
    padded = probe_drift(study.original, study.model, {"input_ids": probe, "attention_mask": mask},
                         labels, forward=study.forward)
    alone = [probe_drift(study.original, study.model,
                         {"input_ids": probe[i:i + 1, :int(mask[i].sum())],
                          "attention_mask": mask[i:i + 1, :int(mask[i].sum())]},
                         labels[i:i + 1], forward=study.forward) for i in range(6)]
    want = np.nanmean([a["saliency_spearman"] for a in alone])
    assert padded["saliency_spearman"] == pytest.approx(want, abs=1e-9)


def _encoded(n, longest, seed):
    """A tokenizer's output: right-padded ids, attention mask and token type ids."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 40, (n, longest), generator=gen)
    mask = torch.ones_like(ids)
    for i, length in enumerate(torch.randint(3, longest + 1, (n,), generator=gen).tolist()):
        ids[i, length:], mask[i, length:] = 0, 0
    labels = (ids[:, 1] % 2).long()
    return hf.BatchEncoding({"input_ids": ids, "attention_mask": mask,
                             "token_type_ids": torch.zeros_like(ids)}), labels


def test_study_on_padded_batch_encodings_of_different_lengths(tmp_path):
    torch.manual_seed(0)
    bert = hf.BertForSequenceClassification(hf.BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=24, max_position_embeddings=16, num_labels=2,
        attn_implementation="eager")).eval()
    train, test = _encoded(48, 9, 0), _encoded(24, 7, 1)     # two sequence lengths
    study = xp.Study(bert, train=train, test=test, seed=0, probe_size=8)
    study.score("taylor", granularity="head", samples=16)
    study.prune(0.25)
    study.score("taylor", granularity="block", samples=16)
    study.prune(0.34)
    study.retrain(epochs=1, progress=False)
    assert np.isfinite(study.evaluate(latency=False).accuracy)
    comp = study.saliency(0, -1, method="integrated_gradients", n=3)
    assert comp.valid is not None and np.all(comp.before[~comp.valid] == 0)
    assert study.attention_maps(0, -1, n=2).to_frame()["saliency_rank_correlation"].notna().any()
    assert study.drift().to_frame()["saliency_rank_correlation"].notna().all()
    assert len(study.sensitivity("magnitude", granularity="head", amounts=[0.25]).to_frame())
    folder = study.save_pretrained(tmp_path / "hf")
    batch = {k: v[:4] for k, v in test[0].items()}
    with torch.no_grad():
        gap = (xp.load_pruned(folder)(**batch).logits - study.model(**batch).logits).abs().max()
    assert gap <= 1e-5


def test_token_comparison_reasons_look_at_real_tokens_only():
    from xprune_nb.explain.token_compare import TokenComparison

    nan = np.full(1, np.nan)
    comp = TokenComparison(
        method="saliency", ids=np.array([[5, 6, 0]]), tokens=[["a", "b", "[PAD]"]],
        targets=np.array([0]), before=np.array([[2.0, 2.0, 0.0]]),
        after=np.array([[1.0, 3.0, 0.0]]), pred_before=np.array([0]),
        pred_after=np.array([0]), spearman=nan, topk_iou=nan, deletion_before=nan,
        deletion_after=nan, insertion_before=nan, insertion_after=nan,
        valid=np.array([[True, True, False]]))
    assert comp.reasons() == ["before: constant map"]     # the padding's 0 is not a rank
