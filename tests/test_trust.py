"""Files and recipes never run code unless the caller opts in with ``trust_source=True``.

Every refusal here is checked by its effect, not only by its message: a marker file that the
named callable (or the import of the named module) would write must not exist afterwards, and a
file naming ``os.abort`` is loaded in a child process that must not die.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError, StudyFileError
from xprune_nb.models import DigitsCNN, ToyMLP
from xprune_nb.record.io.checkpoint import read_checkpoint
from xprune_nb.record.io.resolver import (
    build_module,
    check_plain_kwargs,
    resolve_factory,
    resolve_module_class,
)

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

# a module users could have written: importing it leaves a marker, and so does calling any of
# its functions or building its non-module class
USER_MODULE = '''
import pathlib
from torch import nn

IMPORTED = pathlib.Path({imported!r})
CALLED = pathlib.Path({called!r})
IMPORTED.touch()


def make_net(**kwargs):
    CALLED.touch()
    return Net(**kwargs)


def not_a_model(**kwargs):
    CALLED.touch()
    return 42


def make_data(**kwargs):
    CALLED.touch()
    from xprune_nb import datasets
    return datasets.load("moons")


class NotAModule:
    def __init__(self, **kwargs):
        CALLED.touch()


class Net(nn.Module):
    def __init__(self, hidden=8):
        super().__init__()
        self.fc = nn.Linear(2, hidden)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x):
        return self.head(self.fc(x).relu())
'''


class UserModule:
    """A freshly written, never-imported module on sys.path, with its two markers."""

    def __init__(self, folder: Path):
        self.name = "xp_user_" + uuid.uuid4().hex[:10]
        self.imported, self.called = folder / "imported", folder / "called"
        (folder / f"{self.name}.py").write_text(USER_MODULE.format(
            imported=str(self.imported), called=str(self.called)))

    @property
    def untouched(self) -> bool:
        """Not imported (nor in sys.modules), nothing called."""
        return (not self.imported.exists() and not self.called.exists()
                and self.name not in sys.modules)

    def module(self):
        import importlib

        return importlib.import_module(self.name)


@pytest.fixture
def user(tmp_path, monkeypatch):
    folder = tmp_path / "pkg"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    mod = UserModule(folder)
    yield mod
    sys.modules.pop(mod.name, None)


@pytest.fixture(scope="module")
def moons():
    return xp.datasets.load("moons")


def _rewrite(path: Path, **source) -> Path:
    """The study file at ``path`` with its model source replaced (as an attacker would)."""
    payload = torch.load(path, weights_only=True)
    payload["model_source"] = source
    torch.save(payload, path)
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory, moons):
    """A small zoo study file, copied per test before it is rewritten."""
    study = xp.Study(xp.zoo.load("toy_mlp"), moons, seed=0)
    study.score("magnitude")
    study.prune(0.25)
    return study.save(tmp_path_factory.mktemp("saved") / "toy.xprune")


@pytest.fixture
def study_file(saved, tmp_path):
    copy = tmp_path / "study.xprune"
    copy.write_bytes(saved.read_bytes())
    return copy


# ------------------------------------------------------------------ the resolver itself
def test_resolver_imports_nothing_without_trust(user):
    for qualname in ("Net", "make_net", "NotAModule"):
        with pytest.raises(StudyFileError, match=r"Pass model=.*trust_source=True \(command "
                                                 r"line: --trust\)"):
            resolve_module_class(user.name, qualname, trust_source=False, call="t")
        with pytest.raises(ConfigError, match=r"t\(model.factory=...\): .*trust_source=True"):
            resolve_factory(f"{user.name}:{qualname}", trust_source=False, call="t",
                            param="model.factory")
    assert user.untouched


def test_resolver_checks_the_class_before_calling_it(user):
    for qualname in ("make_net", "NotAModule"):
        with pytest.raises(StudyFileError, match=f"{user.name}.{qualname} is not a "
                                                 "torch.nn.Module class; refusing to call it"):
            build_module(user.name, qualname, {}, trust_source=True, call="t")
    assert user.imported.exists() and not user.called.exists()   # imported (trusted), never called
    net = build_module(user.name, "Net", {"hidden": 5}, trust_source=True, call="t")
    assert type(net) is user.module().Net and net.fc.out_features == 5


@pytest.mark.parametrize("kwargs", [{"hidden": torch.tensor(3)}, {"hidden": (3,)},
                                    {"hidden": float("nan")}, {"not an identifier": 1},
                                    {"hidden": {1: 2}}, ["hidden"], {"hidden": b"3"}])
def test_constructor_arguments_must_be_plain_json(user, kwargs):
    with pytest.raises(StudyFileError, match=r"t\(kwargs=...\): expected constructor arguments "
                                             "as plain values"):
        build_module(user.name, "Net", kwargs, trust_source=True, call="t")
    assert check_plain_kwargs({"a": [1, 2.5, None, {"b": "c"}], "d": True}, call="t") == {
        "a": [1, 2.5, None, {"b": "c"}], "d": True}


@pytest.mark.parametrize("module, qualname", [("os", "__class__"), ("os;x", "y"),
                                              ("xprune_nb.models", "ToyMLP.__init__"),
                                              ("xprune_nb.models", "torch"),
                                              ("xprune_nb.models", "_conv_bn_relu")])
def test_odd_names_are_refused(module, qualname):
    with pytest.raises(StudyFileError):
        resolve_module_class(module, qualname, trust_source=True, call="t")


def test_package_models_need_no_trust():
    cls = resolve_module_class("xprune_nb.models", "DigitsCNN", trust_source=False, call="t")
    assert cls is DigitsCNN
    assert resolve_factory("xprune_nb.models:ToyMLP", trust_source=False, call="t",
                           param="model.factory") is ToyMLP


# ------------------------------------------------------------------ Study.load
def test_study_file_naming_a_user_module_imports_nothing(study_file, user):
    for qualname in ("Net", "make_net", "NotAModule"):
        _rewrite(study_file, kind="class", module=user.name, qualname=qualname)
        with pytest.raises(StudyFileError, match=r"Study.load: the file names the class .*"
                                                 r"Pass model=.*trust_source=True"):
            xp.Study.load(study_file)
    assert user.untouched


def test_study_file_with_trust_calls_only_module_classes(study_file, user, tmp_path):
    for qualname in ("make_net", "NotAModule"):
        _rewrite(study_file, kind="class", module=user.name, qualname=qualname)
        with pytest.raises(StudyFileError, match="is not a torch.nn.Module class"):
            xp.Study.load(study_file, trust_source=True)
    assert not user.called.exists()
    _rewrite(study_file, kind="class", module="tempfile", qualname="mkdtemp")
    before = sorted(tmp_path.iterdir())
    with pytest.raises(StudyFileError, match="tempfile.mkdtemp is not a torch.nn.Module"):
        xp.Study.load(study_file, trust_source=True, data=None)
    assert sorted(tmp_path.iterdir()) == before


def test_trusted_user_class_round_trip(user, moons, tmp_path):
    torch.manual_seed(0)
    study = xp.Study(user.module().Net(), moons, seed=0)
    study.score("magnitude")
    study.prune(0.25)
    path = study.save(tmp_path / "user.xprune")
    with pytest.raises(StudyFileError, match="trust_source=True"):
        xp.Study.load(path)                        # the new contract: opt in, or model=
    loaded = xp.Study.load(path, trust_source=True)
    assert type(loaded.original) is user.module().Net
    for key, value in study.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)
    again = xp.Study.load(path, model=user.module().Net())   # model= needs no trust
    assert again.current == study.current


def test_study_load_refuses_bad_arguments(study_file):
    with pytest.raises(ConfigError, match=r"Study.load\(model=...\): expected a torch.nn.Module"):
        xp.Study.load(study_file, model="x")
    with pytest.raises(ConfigError, match=r"Study.load\(trust_source=...\)"):
        xp.Study.load(study_file, trust_source="yes")


ABORT_CHILD = """
import sys
import xprune_nb as xp
from xprune_nb.core.errors import StudyFileError
try:
    xp.Study.load(sys.argv[1], trust_source=sys.argv[2] == "1")
except StudyFileError as exc:
    print("refused:", exc)
"""


@pytest.mark.slow  # child processes importing torch
def test_os_abort_in_a_study_file_never_runs(study_file, tmp_path):
    """A file naming ``os.abort``: with or without trust, and through ``xprune-nb export``, the
    process must survive (a call would kill it with SIGABRT)."""
    _rewrite(study_file, kind="class", module="os", qualname="abort")
    commands = [[sys.executable, "-c", ABORT_CHILD, str(study_file), "0"],
                [sys.executable, "-c", ABORT_CHILD, str(study_file), "1"],
                [sys.executable, "-m", "xprune_nb.ui.cli", "export", str(study_file),
                 str(tmp_path / "x.py"), "--trust"]]
    procs = [subprocess.Popen(c, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in commands]
    results = [(p.wait(timeout=180), *p.communicate()) for p in procs]
    (rc0, out0, err0), (rc1, out1, err1), (rc2, _, err2) = results
    assert rc0 == 0 and "refused:" in out0 and "trust_source=True" in out0, err0
    assert rc1 == 0 and "os.abort is not a torch.nn.Module class" in out1, err1
    assert rc2 == 2 and "os.abort is not a torch.nn.Module class" in err2, err2
    assert not (tmp_path / "x.py").exists()


# ------------------------------------------------------------------ load_pruned
def test_checkpoint_imports_nothing_without_trust(user, moons, tmp_path):
    torch.manual_seed(0)
    study = xp.Study(xp.zoo.load("toy_mlp"), moons, seed=0)
    study.score("magnitude")
    study.prune(0.25)
    path = study.save_pruned(tmp_path / "model.pt")
    payload = read_checkpoint(path)
    for qualname in ("Net", "make_net", "NotAModule"):
        payload["architecture"].update(module=user.name, qualname=qualname, zoo=None)
        torch.save(payload, tmp_path / "evil.pt")
        with pytest.raises(StudyFileError, match=r"load_pruned: the file names the class"):
            xp.load_pruned(tmp_path / "evil.pt")
    assert user.untouched
    for qualname in ("make_net", "NotAModule"):
        payload["architecture"].update(qualname=qualname)
        torch.save(payload, tmp_path / "evil.pt")
        with pytest.raises(StudyFileError, match="not a torch.nn.Module class"):
            xp.load_pruned(tmp_path / "evil.pt", trust_source=True)
    assert not user.called.exists()
    # a module class with arguments that are not plain values: refused before __init__
    payload["architecture"].update(qualname="Net", kwargs={"hidden": torch.tensor(64)})
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(StudyFileError, match=r"load_pruned\(kwargs=...\): expected constructor"):
        xp.load_pruned(tmp_path / "evil.pt", trust_source=True)
    with pytest.raises(ConfigError, match=r"load_pruned\(trust_source=...\)"):
        xp.load_pruned(path, trust_source=1)


def test_trusted_checkpoint_of_a_user_class(user, moons, tmp_path):
    torch.manual_seed(0)
    study = xp.Study(user.module().Net(hidden=12), moons, seed=0)
    study.score("magnitude")
    study.prune(0.25)
    path = study.save_pruned(tmp_path / "model.pt", kwargs={"hidden": 12})
    model = xp.load_pruned(path, trust_source=True)
    assert model.fc.out_features == study.model.fc.out_features == 9
    assert torch.equal(model.head.weight, study.model.head.weight)


# ------------------------------------------------------------------ recipes
def _recipe(model=None, data=None) -> dict:
    return {"model": model or {"zoo": "toy_mlp"}, "data": data or {"dataset": "moons"},
            "steps": [{"score": {"criterion": "magnitude"}}, {"prune": {"amount": 0.25}}]}


def test_recipe_factories_need_trust(user, tmp_path):
    marker = tmp_path / "pwned"
    cases = [(_recipe(model={"factory": "os:system", "kwargs": {"command": f"touch {marker}"}}),
              "model.factory"),
             (_recipe(data={"factory": "os:system", "kwargs": {"command": f"touch {marker}"}}),
              "data.factory"),
             (_recipe(model={"factory": "tempfile:mkdtemp", "kwargs": {"dir": str(tmp_path)}}),
              "model.factory"),
             (_recipe(model={"factory": f"{user.name}:make_net"}), "model.factory"),
             (_recipe(model={"factory": f"{user.name}:Net"}), "model.factory"),
             (_recipe(data={"factory": f"{user.name}:make_data"}), "data.factory")]
    before = sorted(tmp_path.iterdir())
    for recipe, param in cases:
        with pytest.raises(ConfigError, match=rf"Study.from_recipe\({param}=...\): the recipe "
                                              r"names the callable .*trust_source=True"):
            xp.Study.from_recipe(recipe, progress=False)
    assert sorted(tmp_path.iterdir()) == before and not marker.exists() and user.untouched


def test_trusted_recipe_factories_run(user):
    study = xp.Study.from_recipe(_recipe(model={"factory": f"{user.name}:make_net",
                                                "kwargs": {"hidden": 6}},
                                         data={"factory": f"{user.name}:make_data"}),
                                 progress=False, trust_source=True)
    assert user.called.exists() and study.original.fc.out_features == 6
    with pytest.raises(ConfigError, match=r"model=...\): expected a factory returning a "
                                          "torch.nn.Module"):
        xp.Study.from_recipe(_recipe(model={"factory": f"{user.name}:not_a_model"}),
                             trust_source=True)
    for bad in ({"hidden": torch.tensor(3)}, {"hidden": float("inf")}, {"hidden": {3}}):
        with pytest.raises(ConfigError, match=r"Study.from_recipe\(model.kwargs=...\): "
                                              "expected a mapping of argument name -> plain"):
            xp.Study.from_recipe(_recipe(model={"factory": f"{user.name}:make_net",
                                                "kwargs": bad}), trust_source=True)


def test_recipe_of_package_classes_and_given_models_need_no_trust(user):
    study = xp.Study.from_recipe(_recipe(model={"factory": "xprune_nb.models:ToyMLP"}),
                                 progress=False)
    assert type(study.original) is ToyMLP
    # model= and data= replace the factories: nothing of the recipe's is imported
    study = xp.Study.from_recipe(_recipe(model={"factory": f"{user.name}:make_net"},
                                         data={"factory": f"{user.name}:make_data"}),
                                 model=xp.zoo.load("toy_mlp"), data=xp.datasets.load("moons"),
                                 progress=False)
    assert user.untouched and study.current == 1


@pytest.mark.slow  # child processes importing torch
def test_cli_run_refuses_factories_without_trust(user, tmp_path):
    recipe = xp.Recipe.from_dict(_recipe(model={"factory": f"{user.name}:make_net"}))
    path = recipe.save(tmp_path / "r.yaml")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(user.imported.parent), ENV["PYTHONPATH"]])}
    proc = subprocess.run([sys.executable, "-m", "xprune_nb.ui.cli", "run", str(path), "--out",
                           str(tmp_path / "out")], env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 2 and "(command line: --trust)" in proc.stderr, proc.stderr
    assert user.untouched and not (tmp_path / "out").exists()


def test_cli_trust_flags():
    from xprune_nb.ui.cli import build_parser

    parser = build_parser()
    for flag in ("--trust", "--trust-source"):
        assert parser.parse_args(["run", "r.yaml", flag]).trust is True
        assert parser.parse_args(["export", "s.xprune", "x.py", flag]).trust is True
    assert parser.parse_args(["run", "r.yaml"]).trust is False
