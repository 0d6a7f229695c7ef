"""Saving and loading studies: exact round trip, never executing code from a file."""

from __future__ import annotations

import pickle

import pytest
import torch
from conftest import TinyResidual, make_study, state_equal

import xprune_nb as xp


def test_round_trip_zoo_model_without_model_argument(tmp_path, digits):
    study = xp.Study(xp.zoo.load("digits_cnn"), digits)
    study.score("taylor", samples=64)
    study.prune(0.3)
    study.retrain(epochs=1, progress=False)
    study.score("magnitude", granularity="weight")
    study.prune(0.5)
    study.goto(2)
    path = study.save(tmp_path / "s.xprune")
    loaded = xp.Study.load(path)
    assert loaded.current == 2 and len(loaded.history) == 4
    assert state_equal(loaded.model.state_dict(), study.model.state_dict())
    loaded.goto(3)
    study.goto(3)
    assert state_equal(loaded.model.state_dict(), study.model.state_dict())
    assert loaded.scores_at(0).criterion == "taylor"
    assert loaded.history.to_frame().equals(study.history.to_frame())


def test_round_trip_user_model_and_data(tmp_path, small_digits):
    study = make_study("residual", small_digits)
    study.score("gradient", samples=64)
    study.prune(0.4)
    path = study.save(tmp_path / "user.xprune")
    loaded = xp.Study.load(path, model=TinyResidual())
    assert state_equal(loaded.model.state_dict(), study.model.state_dict())
    assert torch.equal(loaded.data.train.X, study.data.train.X)
    loaded.score("magnitude")
    loaded.prune(0.2)


def test_loaded_file_contains_only_plain_data(tmp_path, small_digits):
    study = make_study("mlp", small_digits)
    path = study.save(tmp_path / "s.xprune")
    torch.load(path, weights_only=True)   # would raise on any pickled object


class _Boom:
    def __reduce__(self):
        import os
        return (os.system, ("touch " + str(_Boom.marker),))


def test_crafted_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    _Boom.marker = marker
    evil = tmp_path / "evil.xprune"
    torch.save({"format": "xprune_nb.study", "version": 1, "payload": _Boom()}, evil)
    with pytest.raises(xp.StudyFileError, match="not a readable xprune_nb study"):
        xp.Study.load(evil)
    assert not marker.exists()
    raw = tmp_path / "raw.xprune"
    raw.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(xp.StudyFileError):
        xp.Study.load(raw)
    assert not marker.exists()


def test_corrupt_missing_and_foreign_files(tmp_path):
    with pytest.raises(xp.StudyFileError, match="no such file"):
        xp.Study.load(tmp_path / "nope.xprune")
    bad = tmp_path / "bad.xprune"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(xp.StudyFileError, match="not a readable"):
        xp.Study.load(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(xp.StudyFileError, match="not an xprune_nb study"):
        xp.Study.load(foreign)


def test_wrong_architecture_is_reported(tmp_path, small_digits):
    study = make_study("residual", small_digits)
    path = study.save(tmp_path / "s.xprune")
    with pytest.raises(xp.StudyFileError, match="does not match the saved architecture"):
        xp.Study.load(path, model=torch.nn.Linear(2, 2))
