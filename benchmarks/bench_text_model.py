"""A BERT-base-sized text classifier through the whole path, public API only (issue 20).

A random-config ``BertForSequenceClassification`` at BERT-base size (12 layers x 12 heads,
hidden 768, vocabulary 30522) reads 256 padded examples with attention masks (sentences of
8-32 tokens, padded per batch of the tokenizer's kind), and goes through: score heads, prune
heads, retrain one epoch, token explanations before/after (integrated gradients), save_pretrained
/ load_pruned (outputs compared), ONNX at two sequence lengths. Each stage's wall time is
printed; the target is <= 10 minutes on this 2-core CPU. The path cannot start offline from a
trained checkpoint, so accuracy is not the point here: the times and the round trips are.

Run by hand: ``.venv/bin/python benchmarks/bench_text_model.py [--quick]`` (``--quick``: a
4-layer, hidden-256 config, for a smoke run). Results go to docs/benchmarks.md ("Text model
path").
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

import xprune_nb as xp

torch.set_num_threads(2)


def padded_text(n: int, vocab: int, seed: int = 0, shortest: int = 8, longest: int = 32):
    """``n`` sentences of random length with a cue word deciding the class, right-padded to the
    longest (as a tokenizer pads a batch), with their attention mask and token type ids."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(shortest, longest + 1, (n,), generator=gen)
    ids = torch.zeros(n, longest, dtype=torch.long)
    mask = torch.zeros(n, longest, dtype=torch.long)
    labels = torch.randint(0, 2, (n,), generator=gen)
    for i, length in enumerate(lengths.tolist()):
        ids[i, :length] = torch.randint(1000, vocab, (length,), generator=gen)
        ids[i, 0] = 101                                  # [CLS]
        ids[i, torch.randint(1, length, (1,), generator=gen)] = 2000 + int(labels[i])  # the cue
        mask[i, :length] = 1
    return {"input_ids": ids, "attention_mask": mask,
            "token_type_ids": torch.zeros_like(ids)}, labels


def main(argv=None) -> dict:
    import transformers as hf

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--examples", type=int, default=256)
    args = parser.parse_args(argv)
    size = (dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                 intermediate_size=1024) if args.quick else {})
    config = hf.BertConfig(num_labels=2, attn_implementation="eager", **size)
    times: dict[str, float] = {}
    out: dict = {"config": "quick" if args.quick else "bert-base", "examples": args.examples,
                 "python": platform.python_version(), "torch": torch.__version__,
                 "threads": torch.get_num_threads()}

    def stage(name, fn):
        start = time.perf_counter()
        value = fn()
        times[name] = round(time.perf_counter() - start, 2)
        print(f"{name:<28} {times[name]:8.2f} s", flush=True)
        return value

    torch.manual_seed(0)
    model = stage("build model", lambda: hf.BertForSequenceClassification(config).eval())
    train, y = padded_text(args.examples, config.vocab_size, seed=0)
    test, y_test = padded_text(64, config.vocab_size, seed=1)
    study = stage("Study", lambda: xp.Study(model, train=(train, y), test=(test, y_test),
                                            seed=0, probe_size=16))
    stage("score heads (taylor)", lambda: study.score("taylor", granularity="head",
                                                      samples=64, batch_size=16))
    stage("prune 25% of heads", lambda: study.prune(0.25))
    stage("retrain 1 epoch", lambda: study.retrain(epochs=1, batch_size=16, lr=2e-5,
                                                   progress=False))
    rows = {k: v[:4] for k, v in test.items()}
    comp = stage("token IG before/after", lambda: study.saliency(
        0, -1, method="integrated_gradients", inputs=rows, n_steps=16))
    out["ig_rank_correlation"] = float(comp.summary().get("saliency_rank_correlation",
                                                          float("nan")))
    folder = Path(tempfile.mkdtemp()) / "bert-pruned"
    stage("save_pretrained", lambda: study.save_pretrained(folder))
    loaded = stage("load_pruned", lambda: xp.load_pruned(folder))
    with torch.no_grad():
        diff = (loaded(**rows).logits - study.model(**rows).logits).abs().max()
    out["round_trip_max_abs_diff"] = float(diff)
    from xprune_nb.export.onnx import export_onnx, onnx_session, run_onnx

    path = stage("export ONNX (checked)", lambda: export_onnx(
        study.model, {k: v[:2, :24] for k, v in test.items()}, folder.parent / "bert.onnx"))
    session = onnx_session(path)
    for length in (12, 32):
        x = {k: v[:2, :length] for k, v in test.items()}
        with torch.no_grad():
            want = study.model(**x).logits
        out[f"onnx_max_abs_diff_len{length}"] = float((run_onnx(session, x) - want).abs().max())
    out["params"] = [int(study.history[0].metrics["params"]),
                     int(study.step.metrics["params"])]
    out["times_s"] = times
    out["total_s"] = round(sum(times.values()), 1)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
