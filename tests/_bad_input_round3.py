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

from xprune_nb.errors import ConfigError, StudyFileError

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

