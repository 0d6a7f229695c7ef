"""Dynamic (input-dependent) pruning of token models held as users hold them: Hugging Face
BERT and DistilBERT on padded BatchEncodings (and a ViT, which torch.fx cannot trace either).
The mask travels through the trunk, the branch (a masked token mean), the sliced paths and the
drift; padding changes nothing; save/load, recipes and load_pruned restore the net."""

from __future__ import annotations

import pytest
import torch

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError

hf = pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore")


def _encoded(n, longest, seed, classes=3):
    """A tokenizer's output: right-padded ids, attention mask and token type ids."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 40, (n, longest), generator=gen)
    mask = torch.ones_like(ids)
    for i, length in enumerate(torch.randint(3, longest + 1, (n,), generator=gen).tolist()):
        ids[i, length:], mask[i, length:] = 0, 0
    labels = (ids[:, 1] % classes).long()
    return hf.BatchEncoding({"input_ids": ids, "attention_mask": mask,
                             "token_type_ids": torch.zeros_like(ids)}), labels


def _padded(enc, extra):
    """The same examples with ``extra`` more padding tokens on the right."""
    return hf.BatchEncoding({k: torch.cat([v, torch.zeros(len(v), extra, dtype=v.dtype)], 1)
                             for k, v in enc.items()})


def _bert():
    torch.manual_seed(0)
    return hf.BertForSequenceClassification(hf.BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=24, max_position_embeddings=20, num_labels=3)).eval()


@pytest.fixture(scope="module")
def bert_study():
    study = xp.Study(_bert(), train=_encoded(48, 9, 0), test=_encoded(24, 7, 1), seed=0,
                     probe_size=8)
    study.dynamic(epochs=2, finetune=1, max_paths=2)
    return study


def test_bert_dynamic_step_carries_the_mask(bert_study):
    study = bert_study
    step = study.step
    assert step.kind == "dynamic" and step.config["criterion"] == "xmask"
    plan = study.model.plan
    assert plan["split"] == "hooks" and plan["branch"]["tokens"]
    assert plan["at"].startswith("bert.encoder.layer.")
    assert all(k.startswith(("bert.encoder.layer.", "bert.pooler")) for k in plan["sizes"])
    m = step.metrics
    assert m["macs"] <= m["macs_longest"] < study.history[0].metrics["macs"]
    assert 0 <= m["exit_share"] <= 1
    x = study.data.test.X
    with torch.no_grad():
        out = study.model(**x)
        # padding is invisible: more pad tokens change neither the route nor the logits
        torch.testing.assert_close(study.model(**_padded(x, 3)), out, atol=1e-5, rtol=0)
        # the branch averages real tokens only: garbage ids under the mask change nothing
        noisy = dict(x)
        noisy["input_ids"] = torch.where(x["attention_mask"] == 0, 7, x["input_ids"])
        torch.testing.assert_close(study.model(**noisy), out, atol=1e-5, rtol=0)
    assert study.drift().to_frame()["saliency_rank_correlation"].notna().all()
    from xprune_nb.explain.drift import probe_saliency

    sal, _ = probe_saliency(study.model, study.probe_x, study.probe_y)   # per token, masked
    pad = study.probe_x["attention_mask"] == 0
    assert pad.any() and (sal[pad] == 0).all() and (sal[~pad] > 0).any()
    frame = study.why().to_frame()
    assert len(frame) and (frame["kept"] <= frame["of"]).all()
    assert {"latency_b1_mean_ms", "exit_share"} <= set(study.evaluate(latency=True).dynamic)


def test_bert_dynamic_restores_from_file_recipe_and_checkpoint(bert_study, tmp_path):
    study = bert_study
    x = study.data.test.X
    with torch.no_grad():
        expected = study.model(**x)
    loaded = xp.Study.load(study.save(tmp_path / "s.xprune"), model=_bert())
    replayed = xp.Study.from_recipe(study.recipe(), progress=False)
    rebuilt = xp.load_pruned(study.save_pruned(tmp_path / "m.pt"))
    with pytest.raises(ConfigError, match=r"save_pretrained: the step's model is dynamic"):
        study.save_pretrained(tmp_path / "hf")
    with torch.no_grad():
        for other in (loaded.model, replayed.model, rebuilt):
            torch.testing.assert_close(other(**x), expected, atol=1e-6, rtol=0)
    study.undo()
    assert type(study.model).__name__ == "BertForSequenceClassification"
    study.goto(1)


def test_distilbert_dynamic_path_of_and_sweep():
    from xprune_nb.pruning.dynamic.eval import path_of
    from xprune_nb.pruning.dynamic.sweep import per_class_scores, sweep

    torch.manual_seed(0)
    model = hf.DistilBertForSequenceClassification(hf.DistilBertConfig(
        vocab_size=40, dim=16, n_layers=2, n_heads=4, hidden_dim=24,
        max_position_embeddings=16, num_labels=3)).eval()
    (enc, y), (test, ty) = _encoded(36, 8, 2), _encoded(12, 6, 3)
    study = xp.Study(model, train=(enc, y), test=(test, ty), seed=0, probe_size=6)
    step = study.dynamic(epochs=2, finetune=0, max_paths=2, k=1)
    assert study.model.plan["at"].startswith("distilbert.transformer.layer.")
    assert step.metrics["macs_longest"] < study.history[0].metrics["macs"]
    rows = path_of(study.model, test)
    assert len(rows) == 12 and set(rows["path"]) <= {-1, 0, 1}
    scores = per_class_scores(model, enc, y, criterion="xmask", samples=24)
    frame = sweep(model, train_X=enc, train_y=y, X=test, y=ty, per_class_scores=scores,
                  confidence=(0.9, 1.0), k=(1,), keep=(0.5,), epochs=1, max_paths=2,
                  finetune=0, latency=False)
    assert list(frame["technique"]) == ["dense", "dynamic", "dynamic"]
    dyn = frame[frame["technique"] == "dynamic"]
    assert (dyn["macs_longest"] < float(frame.loc[0, "macs_mean"])).all()


def test_vit_that_fx_cannot_trace_is_cut_with_hooks():
    torch.manual_seed(0)
    model = hf.ViTForImageClassification(hf.ViTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=3,
        num_attention_heads=4, intermediate_size=24, num_labels=3)).eval()
    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(30, 1, 8, 8, generator=gen), torch.arange(30) % 3
    study = xp.Study(model, train=(X, y), seed=0, probe_size=6)
    step = study.dynamic(criterion="xmask", epochs=1, finetune=0, max_paths=2)
    assert study.model.plan["split"] == "hooks"
    assert step.metrics["macs_longest"] < study.history[0].metrics["macs"]
    with torch.no_grad():
        assert study.model(X[:5]).shape == (5, 3)


def test_tensor_only_criteria_are_refused_for_named_inputs():
    study = xp.Study(_bert(), train=_encoded(24, 7, 0), seed=0, probe_size=4)
    with pytest.raises(ConfigError, match=r"Study.dynamic\(criterion=...\): expected a "
                                          r"class-aware criterion that scores channels of a "
                                          r"model with named inputs .*'lrp' propagates"):
        study.dynamic(criterion="lrp", epochs=1)
    assert len(study.history) == 1 and study.current == 0
    from xprune_nb.ui.widgets.dynamic import DynamicView

    view = DynamicView(study)   # the panel offers what applies: xmask, the hook points
    view.load_points()
    assert view.criterion.value == "xmask" and "lrp" not in view.criterion.options
    assert "bert.encoder.layer.1" in [v for _, v in view.at.options]


class _TokenNet(torch.nn.Module):
    """A user's own token model: named inputs, torch's fused encoder layers, a masked mean."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.emb = nn.Embedding(40, 16, padding_idx=0)
        self.blocks = nn.ModuleList([nn.TransformerEncoderLayer(
            16, 2, 32, batch_first=True, dropout=0.0) for _ in range(3)])
        self.fc1, self.act, self.head = nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 3)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids)
        for block in self.blocks:
            h = block(h, src_key_padding_mask=attention_mask == 0)
        m = attention_mask.unsqueeze(-1).float()
        return self.head(self.act(self.fc1((h * m).sum(1) / m.sum(1))))


def test_own_token_model_with_fused_layers_counts_every_path_mac():
    from xprune_nb.pruning.dynamic.eval import path_macs

    torch.manual_seed(0)
    enc, y = _encoded(36, 8, 4)
    enc = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    study = xp.Study(_TokenNet().eval(), train=(enc, y), seed=0, probe_size=4)
    step = study.dynamic(epochs=1, finetune=0, max_paths=2)
    assert study.model.plan["at"].startswith("blocks.")
    dense = study.history[0].metrics["macs"]
    parts = path_macs(study.model, {k: v[:1] for k, v in enc.items()})
    # the fused encoder-layer kernels are invisible to a plain FLOP counter: counted as the
    # dense model is, a path (two encoder layers and the head) is a large share of it
    assert min(parts["paths"]) > 0.3 * dense
    assert step.metrics["macs_longest"] < dense
    with torch.no_grad():
        torch.testing.assert_close(study.model(**_padded(enc, 2)), study.model(**enc),
                                   atol=1e-5, rtol=0)


def test_a_model_without_channel_groups_is_refused_naming_dynamic():
    from xprune_nb.core.errors import ModelError

    torch.manual_seed(0)
    gpt2 = hf.GPT2ForSequenceClassification(hf.GPT2Config(
        vocab_size=40, n_embd=16, n_layer=2, n_head=4, n_positions=16, num_labels=3,
        pad_token_id=0, bos_token_id=0, eos_token_id=0)).eval()
    study = xp.Study(gpt2, train=_encoded(24, 7, 0), seed=0, probe_size=4)
    with pytest.raises(ModelError, match=r"Study.dynamic: dynamic pruning slices channels .* "
                                         r"cannot be scored"):
        study.dynamic(epochs=1)
    assert len(study.history) == 1 and study.current == 0
