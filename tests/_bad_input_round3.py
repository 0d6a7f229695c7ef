"""Cases of the bad-input table from the third round of outside probes (issue 17): deploy
writers, contracts, crafted files, and weak messages. ``test_bad_inputs.py`` adds every entry
of :data:`CASES` to its one table, so each runs with the table's checks (the package's error,
the parameter named, nothing a file names runs, the study unchanged).

Each entry is ``(id, fn(ctx), exception, message pattern, table options)``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
from pathlib import Path

import torch

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError, DataError, ModelError, StudyFileError

CASES: list[tuple] = []


def case(id: str, exc, match: str, **kw):
    def register(fn):
        CASES.append((id, fn, exc, match, kw))
        return fn
    return register


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Lower this process's file-size limit (RLIMIT_FSIZE) to ``limit`` bytes, with SIGXFSZ
    ignored so that a write past it fails with EFBIG, as it does under ``ulimit -f``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def _fifo(c, name: str) -> Path:
    """A named pipe with a reader kept open (non-blocking), so a writer that wrongly opens
    it fails the case instead of hanging the suite."""
    path = c.tmp / name
    if not path.exists():
        os.mkfifo(path)
        _READERS.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    return path


_READERS: list[int] = []


def _kept(paths: dict[Path, bytes]) -> None:
    for path, old in paths.items():
        assert path.is_file() and not path.is_symlink(), f"{path} was removed or replaced"
        assert path.read_bytes() == old, f"{path} was changed"


# ------------------------------------------------------------------ deploy writers (cause 2)
def _onnx(c, path):
    return c.study.export_onnx(path, check=False)


def _compressed(c, path):
    from xprune_nb.export.compressed import save_compressed

    return save_compressed(c.study.model, path)


for _name, _target in [("fifo", lambda c: _fifo(c, "model.onnx")),
                       ("directory", lambda c: c.files["directory"])]:
    case(f"export-export_onnx-to-{_name}", StudyFileError, r"path")(
        lambda c, t=_target: _onnx(c, t(c)))
    case(f"export-save_compressed-to-{_name}", StudyFileError, r"path")(
        lambda c, t=_target: _compressed(c, t(c)))


@case("export-export_onnx-file-size-limit", StudyFileError, r"path[\s\S]*size limit")
def _onnx_fsize(c):
    target = c.tmp / "limited.onnx"
    target.write_bytes(b"previous model")
    try:
        with file_size_limit(64):
            _onnx(c, target)
    finally:
        _kept({target: b"previous model"})


@case("export-save_compressed-file-size-limit", StudyFileError, r"path[\s\S]*size limit")
def _compressed_fsize(c):
    target = c.tmp / "limited.xpz"
    target.write_bytes(b"previous weights")
    try:
        with file_size_limit(64):
            _compressed(c, target)
    finally:
        _kept({target: b"previous weights"})


# ------------------------------------------------------------------ contracts (causes 1, 3)
def _contract_args(c, model_path, **kw):
    return {"model_path": model_path, "probe_x": c.study.probe_x, "probe_y": c.study.probe_y,
            "accuracy_min": 0.0, **kw}


@case("contract-json-grants-trust", StudyFileError, r"trust_source")
def _json_trust(c):
    """A checkpoint naming an importable class; the JSON says trust_source: true; the test
    file (the caller) does not: the class must not be imported."""
    from xprune_nb.export.contract import measure_contract, write_contract_test

    test = write_contract_test(c.tmp / "test_evil.py",
                               **_contract_args(c, c.files["evil_ckpt"], check=False))
    assert "TRUST_SOURCE = False" in test.read_text()
    contract = test.with_name("test_evil.contract.json")
    data = json.loads(contract.read_text())
    data["trust_source"] = True
    contract.write_text(json.dumps(data))
    measure_contract(contract)


def _valid_contract(c, name):
    from xprune_nb.export.contract import write_contract_test

    model = c.tmp / f"{name}_model.pt"
    if not model.exists():
        c.study.save_pruned(model)
    test = write_contract_test(c.tmp / f"{name}.py", **_contract_args(c, model))
    files = [test, test.with_name(f"{name}.contract.json"), test.with_name(f"{name}.probe.pt")]
    return model, {p: p.read_bytes() for p in files}


@case("contract-refused-keeps-previous-files", ConfigError, r"accuracy_min|already breaks")
def _refused_keeps(c):
    from xprune_nb.export.contract import write_contract_test

    model, old = _valid_contract(c, "test_keep")
    try:
        write_contract_test(c.tmp / "test_keep.py", **_contract_args(c, model,
                                                                    accuracy_min=1.0))
    finally:
        _kept(old)


@case("contract-file-size-limit", StudyFileError, r"path[\s\S]*size limit")
def _contract_fsize(c):
    from xprune_nb.export.contract import write_contract_test

    model, old = _valid_contract(c, "test_fsize")
    try:
        with file_size_limit(256):
            write_contract_test(c.tmp / "test_fsize.py", **_contract_args(c, model))
    finally:
        _kept(old)


@case("contract-json-to-fifo", StudyFileError, r"path")
def _contract_fifo(c):
    from xprune_nb.export.contract import write_contract_test

    model, _ = _valid_contract(c, "test_fifo")
    (c.tmp / "test_fifo.contract.json").unlink()
    _fifo(c, "test_fifo.contract.json")   # (check=False: a reader of a pipe would block)
    write_contract_test(c.tmp / "test_fifo.py", **_contract_args(c, model, check=False))


@case("contract-trust_source-str", ConfigError, r"trust_source")
def _contract_trust_str(c):
    from xprune_nb.export.contract import write_contract_test

    write_contract_test(c.tmp / "test_str.py", **_contract_args(
        c, c.files["evil_ckpt"], check=False, trust_source="yes"))


def _tampered(c, name, change):
    from xprune_nb.export.contract import measure_contract

    model, _ = _valid_contract(c, name)
    contract = c.tmp / f"{name}.contract.json"
    data = json.loads(contract.read_text())
    change(data, c.tmp / f"{name}.probe.pt")
    contract.write_text(json.dumps(data))
    measure_contract(contract)


for _cid, _change, _pat in [
    ("probe-outside", lambda d, p: d.update(probe="../../etc/passwd"), r"probe"),
    ("unknown-key", lambda d, p: d.update(run="os.system"), r"keys"),
    ("bound-str", lambda d, p: d["bounds"].update(accuracy_min="0.5"), r"bounds"),
    ("top_k-huge", lambda d, p: d.update(top_k=1e300), r"top_k"),
    ("probe-mismatch", lambda d, p: torch.save({"x": torch.zeros(3, 2),
                                                "y": torch.zeros(5).long()}, p), r"probe"),
]:
    case(f"contract-tampered-{_cid}", StudyFileError, _pat)(
        lambda c, ch=_change, i=_cid: _tampered(c, f"test_t_{i.replace('-', '_')}", ch))


def symlinked_contract_json_is_replaced_not_written_through(tmp: Path, study) -> None:
    """Cause 3: a symlinked NAME.contract.json: the link is replaced, its target kept."""
    from xprune_nb.export.contract import write_contract_test

    victim = tmp / "victim.txt"
    victim.write_text("precious")
    model = study.save_pruned(tmp / "sym_model.pt")
    (tmp / "test_sym.contract.json").symlink_to(victim)
    write_contract_test(tmp / "test_sym.py", model_path=model, probe_x=study.probe_x,
                        probe_y=study.probe_y, accuracy_min=0.0)
    assert victim.read_text() == "precious"
    assert not (tmp / "test_sym.contract.json").is_symlink()



# ------------------------------------------------------------------ crafted files (causes 4, 5)
RECIPE_HEAD = ("format: xprune_nb.record.recipe\nversion: 1\nseed: 0\ndata: {dataset: moons}\n"
               "steps: [{score: {criterion: magnitude}}]\n")


def laughs(levels: int) -> str:
    """A YAML "billion laughs": anchor i is a list of ten aliases of anchor i-1, so the
    last one holds 10**levels values; the file is well under a kilobyte."""
    lines = ["l0: &l0 [ha, ha, ha, ha, ha, ha, ha, ha, ha, ha]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]")
    return "\n".join(lines) + "\n"


def _recipe_text(c, name: str, text: str):
    path = c.tmp / name
    path.write_text(text)
    return xp.Study.from_recipe(path, progress=False)


case("recipe-yaml-billion-laughs", ConfigError, r"alias|billion")(
    lambda c: _recipe_text(c, "laughs.yaml", RECIPE_HEAD + "model:\n  zoo: toy_mlp\n"
                           "  kwargs:\n" + "".join("    " + ln + "\n"
                                                   for ln in laughs(6).splitlines())))
case("recipe-yaml-recursive-alias", ConfigError, r"recursive|contains it")(
    lambda c: _recipe_text(c, "loop.yaml", RECIPE_HEAD + "model: {zoo: toy_mlp, kwargs: "
                           "{a: &a [*a]}}\n"))
case("recipe-yaml-deep", ConfigError, r"nested")(
    lambda c: _recipe_text(c, "deep.yaml", RECIPE_HEAD + "model: {zoo: toy_mlp, kwargs: {a: "
                           + "[" * 5000 + "]" * 5000 + "}}\n"))
case("recipe-json-deep", ConfigError, r"nested")(
    lambda c: _recipe_text(c, "deep.json", '{"model": {"zoo": "toy_mlp", "kwargs": {"a": '
                           + "[" * 100000 + "]" * 100000 + '}}, "data": {"dataset": "moons"}}'))


def _edited_study(c, name, edit):
    payload = torch.load(c.files["good"], weights_only=True)
    edit(payload)
    path = c.tmp / name
    torch.save(payload, path)
    return xp.Study.load(path)


def _parent_cycle(payload):
    assert len(payload["steps"]) >= 3
    payload["steps"][1]["parent"], payload["steps"][2]["parent"] = 2, 1


case("load-history-parent-cycle", StudyFileError, r"parent")(
    lambda c: _edited_study(c, "cycle.xprune", _parent_cycle))
case("load-history-self-parent", StudyFileError, r"parent")(
    lambda c: _edited_study(c, "self.xprune",
                            lambda p: p["steps"][2].update(parent=2)))
case("load-history-index-wrong", StudyFileError, r"step 1")(
    lambda c: _edited_study(c, "index.xprune", lambda p: p["steps"][1].update(index=7)))


def _edited_checkpoint(c, name, edit):
    payload = torch.load(c.files["evil_ckpt"].with_name("model.pt"), weights_only=True)
    edit(payload)
    path = c.tmp / name
    torch.save(payload, path)
    return xp.load_pruned(path)


case("load_pruned-input-shape-huge", StudyFileError, r"input shape")(
    lambda c: _edited_checkpoint(c, "huge.pt", lambda p: p.update(
        input_shape=[10 ** 9, 10 ** 9])))
case("load_pruned-input-shape-str", StudyFileError, r"input shape")(
    lambda c: _edited_checkpoint(c, "shape_str.pt", lambda p: p.update(input_shape="2")))


# ------------------------------------------------------------------ huge numbers, strict flags
HUGE = 10 ** 400
case("study-seed-10e400", ConfigError, r"seed")(
    lambda c: xp.Study(xp.zoo.load("toy_mlp"), c.data, seed=HUGE))
case("score-samples-10e400", ConfigError, r"samples")(
    lambda c: c.study.score("magnitude", samples=HUGE))
case("retrain-epochs-10e400", ConfigError, r"epochs")(
    lambda c: c.study.retrain(epochs=HUGE, progress=False))
for _budget in ("macs", "params", "latency"):
    case(f"auto_prune-{_budget}-10e400", ConfigError, _budget)(
        lambda c, b=_budget: c.study.auto_prune(**{b: HUGE}))
case("export-export_script-deploy-str", ConfigError, r"deploy")(
    lambda c: c.study.export_script(c.tmp / "flags.py", deploy="yes"))
case("export-export_script-contract-int", ConfigError, r"contract")(
    lambda c: c.study.export_script(c.tmp / "flags.py", contract=2))

# ------------------------------------------------------------------ names (cause 8)
for _id, _param, _names, _pat in [
    ("duplicate", "class_names", ["a", "a"], r"class_names[\s\S]*more than once"),
    ("dict-index-missing", "class_names", {"yes": 1, "no": 5}, r"class_names[\s\S]*index"),
    ("dict-float-values", "class_names", {"yes": 0.0, "no": 1.0}, r"class_names"),
    ("duplicate", "feature_names", ["x", "x"], r"feature_names[\s\S]*more than once"),
]:
    case(f"study-{_param}-{_id}", ConfigError, _pat)(
        lambda c, p=_param, v=_names: xp.Study(xp.zoo.load("toy_mlp"), c.data, **{p: v}))

# ------------------------------------------------------------------ the call the user made
case("sensitivity-option-unknown", ConfigError, r"Study\.sensitivity[\s\S]*foo")(
    lambda c: c.study.sensitivity("magnitude", foo=1))
case("dynamic-progress-int", ConfigError, r"Study\.dynamic\(progress")(
    lambda c: c.study.dynamic(k=1, progress=3))
case("attention_maps-no-attention", ConfigError, r"Study\.attention_maps: the study's model")(
    lambda c: c.study.attention_maps())
case("attention_maps-pool-median", ConfigError, r"Study\.attention_maps\(pool")(
    lambda c: c.study.attention_maps(pool="median"))
case("grounding-no-boxes", ConfigError, r"Study\.grounding[\s\S]*boxes")(
    lambda c: c.study.grounding())
case("forgotten-method-unknown-nothing-changed", ConfigError, r"Study\.forgotten\(method")(
    lambda c: c.study.forgotten(0, 0, method="nope"))


# ------------------------------------------------------------------ raw errors, odd dtypes
def _half_model():
    from _bad_input_cases import TwoLayer

    return TwoLayer().half()


case("model-half-precision", ModelError, r"model\.float\(\)")(
    lambda c: xp.Study(_half_model(), c.data))
case("data-train-complex", DataError, r"train[\s\S]*complex")(
    lambda c: xp.Study(xp.zoo.load("toy_mlp"), train=(c.X.to(torch.complex64), c.y)))
case("data-train-meta-device", DataError, r"train[\s\S]*meta")(
    lambda c: xp.Study(xp.zoo.load("toy_mlp"), train=(torch.empty(10, 2, device="meta"),
                                                      torch.zeros(10).long())))


class _RaisesInTraining(torch.nn.Module):
    """Runs in eval mode (so a study can be made), raises in train mode."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = torch.nn.Linear(2, 8), torch.nn.Linear(8, 2)

    def forward(self, x):
        if self.training:
            raise RuntimeError("boom in train mode")
        return self.head(torch.relu(self.fc(x)))


def _retrain_raising(c):
    study = xp.Study(_RaisesInTraining(), c.data, seed=0)
    before = {k: v.clone() for k, v in study.model.state_dict().items()}
    try:
        study.retrain(epochs=1, progress=False)
    finally:
        assert len(study.history) == 1 and all(
            torch.equal(v, before[k]) for k, v in study.model.state_dict().items())


case("retrain-model-raises-in-train-mode", ModelError, r"Study\.retrain[\s\S]*training mode")(
    _retrain_raising)


class _RaisingDataset(torch.utils.data.Dataset):
    """A map-style dataset whose items past the middle raise, as a broken file list does."""

    def __len__(self):
        return 40

    def __getitem__(self, i):
        if i >= 20:
            raise IndexError("list index out of range")
        return torch.randn(2), i % 2


case("data-dataset-getitem-raises", DataError,
     r"Study\(\w+=\.\.\.\): reading item \d+ of the dataset raised IndexError")(
    lambda c: xp.Study(xp.zoo.load("toy_mlp"), train=_RaisingDataset(), val=_RaisingDataset(),
                       test=_RaisingDataset()).evaluate())


class _Tokens(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.fc = torch.nn.Embedding(40, 8), torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.emb(x).mean(1))


def _ids_out_of_range_in_test(c):
    ids = torch.randint(0, 40, (30, 6), generator=torch.Generator().manual_seed(0))
    y = ids[:, 0] % 2
    bad = ids.clone()
    bad[3, 2] = 45
    xp.Study(_Tokens(), train=(ids, y), val=(ids, y), test=(bad, y), seed=0)


case("data-token-ids-out-of-range-in-test-only", DataError,
     r"Study\(test=\.\.\.\)[\s\S]*largest token id is 45")(_ids_out_of_range_in_test)
