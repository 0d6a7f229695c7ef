"""Write a recipe as a standalone, readable Python script.

No user string is ever pasted as code: names, labels, file names and values are written with
``repr()`` (and checked to read back as the same literal), keyword names and import paths must
be Python identifiers. The one exception is deliberate: the source code of a model class that
lived only in a notebook is carried verbatim, because a script is code its user reads and runs
on purpose.
"""

from __future__ import annotations

import ast
import datetime as _dt
import textwrap
from pathlib import Path

import torch

from ..core.atomic import as_path, check_target, torch_save, write_bytes, write_text
from ..core.errors import ConfigError
from ..record.recipe import Recipe
from ..record.recipe.replay import Op, plan
from .script_code import (
    _WIDTH,
    _call,
    _defined_names,
    _ident,
    _import,
    _kwargs,
    _lit,
    _shown,
    _sorted_block,
    _split_imports,
)

__all__ = ["write_script", "render_script"]

_CALL = "Study.export_script"
#: names the script defines or imports itself; notebook code must not redefine them
_RESERVED = {"argparse", "Path", "xp", "dist", "load_weights", "load_data", "write_outputs",
             "HERE", "SEED", "MODEL", "DATA", "build_model", "build_data", "main",
             "model_factory", "data_factory", "as_bundle", "build_pretrained", "DATA_HELP",
             "load_groups", "check_group_limits"}


def _model_code(recipe: Recipe, stem: str, imports: list[str], top: list[str]):
    spec = recipe.model
    kwargs = spec.get("kwargs", {})
    body: list[str] = []
    uses_here = False
    if "zoo" in spec:
        body.append(f"    model = xp.zoo.load({_lit(spec['zoo'], 'model.zoo')})")
        override = None
    elif "factory" in spec:
        line, expr = _import(spec["factory"], "model_factory")
        imports.append(line)
        body.append(f"    model = {expr}(**MODEL['kwargs'])")
        override = {"factory": spec["factory"], "kwargs": kwargs}
    elif "transformers" in spec:   # the class name and config are data, never code
        body.append("    model = build_pretrained(MODEL['transformers'], MODEL['config'])")
        override = {"transformers": spec["transformers"], "config": spec["config"]}
    else:
        source = spec["source"]
        try:
            clash = _defined_names(source) & _RESERVED
        except SyntaxError as exc:
            raise ConfigError(f"{_CALL}: the model's source code does not parse: {exc}") from exc
        if clash:
            raise ConfigError(f"{_CALL}: the notebook code defines {sorted(clash)}, names the "
                              "script needs; rename them in the notebook.")
        name = _ident(spec["class_name"], "model.class_name")
        if name not in _defined_names(source):
            raise ConfigError.bad_value(_CALL, "model.class_name", "a class defined in the "
                                        "model's source", name)
        hoisted, rest = _split_imports(source)
        imports.extend(hoisted)
        top.append(rest.strip("\n"))
        body.append(f"    model = {name}(**MODEL['kwargs'])")
        override = {"kwargs": kwargs}
    if recipe.model_state is not None or spec.get("weights"):
        body.append(f"    load_weights(model, HERE / {_lit(stem + '.weights.pt', 'weights')})")
        uses_here = True
    body.append("    return model.eval()")
    return body, override, uses_here


def _data_help(recipe: Recipe, stem: str) -> str:
    """What ``--help`` says about where the script's data comes from."""
    spec = recipe.data
    if "dataset" in spec:
        where = (f"Data: the bundled dataset {spec['dataset']!r}, rebuilt by name (nothing to "
                 "supply).")
    elif "factory" in spec:
        where = (f"Data: built by calling your factory {spec['factory']!r} (your code runs; it "
                 "must be importable here). The study's own loaders and datasets are never "
                 "stored: the factory builds them again.")
    elif "argument" in spec:
        where = (f"Data: pass it with --data FILE (required; the study's data was "
                 f"{spec['argument']!r}, which the script does not hold).")
    else:
        where = (f"Data: your tensors, stored in {stem + '.data.pt'!r} next to this script "
                 "(keep it there).")
    return (where + " --data FILE uses other data instead: a .pt file of plain tensors, read "
            "with torch.load(weights_only=True), holding {'train': {'X': ..., 'y': ...}, "
            "'val': ..., 'test': ...} (X a tensor or a dict of named tensors such as "
            "input_ids and attention_mask), or a .npz file with arrays train_X, train_y, "
            "val_X, ... (named inputs as train_X.input_ids, ...). Files are checked before "
            "use; nothing in them runs as code. Sample sizes (probe, evaluation, scores) are "
            "the study's: " + ", ".join(f"{k}={v}" for k, v in recipe.sampling.items())
            + ".")


def _data_code(recipe: Recipe, stem: str, imports: list[str]):
    spec = recipe.data
    # data given as --data FILE comes first, whatever the recorded source
    given = ["    if path is not None:", "        return load_data(path)"]
    if "dataset" in spec:
        args = [_lit(spec["dataset"], "data.dataset")] + _kwargs(spec.get("options", {}),
                                                                  "data.options")
        return given + _call("return xp.datasets.load", args, "    "), None, False
    if "factory" in spec:
        line, expr = _import(spec["factory"], "data_factory")
        imports.append(line)
        return (given + [f"    return as_bundle({expr}(**DATA['kwargs']))"],
                {"factory": spec["factory"], "kwargs": spec.get("kwargs", {})}, False)
    if "argument" in spec:
        return given + ["    raise SystemExit('this study takes its data as --data FILE; see "
                        "--help')"], None, False
    return given + [f"    return load_data(HERE / {_lit(stem + '.data.pt', 'data file')})"], \
        None, True


def _steps_code(ops: list[Op]) -> list[str]:
    lines: list[str] = []
    in_main = False
    for op in ops:
        if op.on_main and not in_main:
            lines += ["", "    # scoring and pruning run once, on rank 0; under torchrun the "
                      "others", "    # receive the pruned model from it",
                      "    if dist.is_main():"]
            in_main = True
        elif not op.on_main and in_main:
            lines.append("    dist.broadcast_study(study)")
            in_main = False
        if op.action == "retrain":
            p = dict(op.params)
            epochs = _lit(p.pop("epochs", 1), "retrain.epochs")
            args = [f"epochs=args.epochs or {epochs}"] + _kwargs(p, "retrain")
            lines += ["", "    # data-parallel (DistributedDataParallel) under torchrun"]
            lines += _call("study.retrain", args + ["progress=not args.quiet"], "    ")
            continue
        indent = "        "
        if op.action == "score":
            p = dict(op.params)
            args = [_lit(p.pop("criterion"), "score.criterion")] + _kwargs(p, "score")
        elif op.action == "dynamic":
            args = _kwargs(dict(op.params), "dynamic")
        else:
            p = dict(op.params)
            args = [_lit(p.pop("amount"), "prune.amount")] + _kwargs(p, "prune")
        lines += _call(f"study.{op.action}", args, indent)
    if in_main:
        lines.append("    dist.broadcast_study(study)")
    return lines


def render_script(recipe: Recipe, name: str = "prune_study.py", *, study=None,
                  deploy: bool = False, contract: bool = False) -> str:
    """The text of the script for ``recipe`` (``name`` is the script's file name); with
    ``deploy`` it also writes ``model.onnx`` (BatchNorm folded) and, for masked models, a
    compressed ``model.xpz``; with ``contract`` a pytest file guarding accuracy and drift."""
    from ..core.version import __version__

    stem = Path(name).stem
    imports: list[str] = []
    top: list[str] = []
    model_body, model_override, here1 = _model_code(recipe, stem, imports, top)
    data_body, data_override, here2 = _data_code(recipe, stem, imports)
    ops = plan(recipe, expand=True)
    kinds = "\n".join(textwrap.wrap("Steps: " + (", ".join(op.action for op in ops) or "none")
                                    + ".", _WIDTH - 2, initial_indent="# ",
                                    subsequent_indent="#   "))
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    origin = ""
    if study is not None:
        origin = (f"# from a study at step {int(study.current)} of {len(study.history)} "
                  f"(test accuracy {float(study.step.metrics.get('accuracy', 0)):.4f}, "
                  f"{int(study.step.metrics.get('params', 0))} parameters).\n")
    model_desc = (f"zoo model {_lit(recipe.model['zoo'], 'zoo')}" if "zoo" in recipe.model
                  else f"factory {_lit(recipe.model['factory'], 'factory')}"
                  if "factory" in recipe.model
                  else "transformers." + _ident(recipe.model['transformers'], 'transformers')
                  + " built from its config" if "transformers" in recipe.model
                  else f"notebook class {_ident(recipe.model['class_name'], 'class_name')}")
    data_desc = (f"dataset {_lit(recipe.data['dataset'], 'dataset')}" if "dataset" in recipe.data
                 else f"factory {_lit(recipe.data['factory'], 'factory')}"
                 if "factory" in recipe.data else "passed as --data FILE"
                 if "argument" in recipe.data else "tensors stored next to this script")
    shown = _shown(Path(name).name)
    header = (
        "#!/usr/bin/env python3\n"
        "# Reproduces a pruned model made with xprune_nb, outside the notebook.\n"
        f"# Made by xprune_nb {__version__} (Study.export_script) on {when},\n"
        + origin +
        f"# Model: {model_desc}.\n# Data: {data_desc}. Seed: {int(recipe.seed)}.\n"
        f"{kinds}\n#\n"
        "# It rebuilds the original model, loads its weights, replays the recorded steps,\n"
        "# evaluates the result and writes into --out:\n"
        "#   model.pt      the pruned model: xprune_nb.load_pruned('OUT/model.pt')\n"
        "#   recipe.yaml   the same steps as a recipe: xprune-nb run OUT/recipe.yaml\n"
        "#   metrics.json  parameters, MACs, accuracy, world size...\n#\n"
        "# Usage:\n"
        f"#   python {shown} --out OUT [--epochs N] [--device cpu|cuda] [--data FILE]\n"
        f"#   torchrun --nproc_per_node=2 {shown} --out OUT   (data-parallel retraining)\n"
    )
    helpers = ["write_outputs"] + (["load_weights"] if any(
        "load_weights" in line for line in model_body) else []) + (
        ["build_pretrained"] if any("build_pretrained" in ln for ln in model_body) else []) + (
        ["load_data"]) + (
        ["as_bundle"] if any("as_bundle" in line for line in data_body) else []) + (
        ["load_groups"] if recipe.groups else []) + (
        ["check_group_limits"] if recipe.groups and recipe.groups.get("limits") else [])
    lines = [header + '"""Reproduce a pruned model with xprune_nb (see the comments above)."""',
             ""]
    lines += _sorted_block(imports + [
        "import argparse", "from pathlib import Path", "import torch", "import xprune_nb as xp",
        "from xprune_nb import distributed as dist",
        f"from xprune_nb.export import {', '.join(sorted(helpers))}"])
    if top:
        lines += ["", "# " + "-" * 20 + " the model's code, as defined in the notebook",
                  "", "\n".join(top), "", "", "# " + "-" * 68]
    lines += [""] if not top else ["", ""]
    if here1 or here2 or recipe.groups:
        lines.append("HERE = Path(__file__).resolve().parent")
    lines.append(f"SEED = {int(recipe.seed)}")
    # float sums depend on the number of CPU threads; fine-tuning can amplify that into
    # visibly different weights, so the script uses the thread count the study ran with
    lines.append(f"THREADS = {int(torch.get_num_threads())}")
    if model_override is not None:  # the constructor arguments (and factory), as recorded
        # kwargs always present: the code below reads MODEL['kwargs'] (a factory given
        # without arguments takes none)
        lines.append("MODEL = " + (_lit(model_override, "model") if "transformers" in
                                   model_override else _lit(
            {**{k: v for k, v in recipe.model.items() if k in ("factory", "class_name")},
             "kwargs": recipe.model.get("kwargs", {})}, "model")))
    if data_override is not None:
        lines.append("DATA = " + _lit(data_override, "data"))
    # one literal per short piece, so the script stays within its line length
    pieces = textwrap.wrap(_data_help(recipe, stem), 70, drop_whitespace=False)
    lines += ["DATA_HELP = ("] + [f"    {_lit(p, 'data help')}" for p in pieces] + [")"]
    lines += ["", "", "def build_model():", '    """The original model, with its weights."""']
    lines += model_body
    lines.append("SAMPLING = " + _lit(dict(recipe.sampling), "sampling"))
    lines += ["", "", "def build_data(path=None):",
              '    """The train/val/test data: the file given as --data, else the study\'s."""']
    lines += data_body
    overrides = []
    if model_override is not None:
        overrides.append("model=" + ("MODEL" if {"factory", "transformers"} & set(model_override)
                                     else "{'kwargs': MODEL['kwargs']}"))
    if data_override is not None:   # data given as --data is not the recorded factory's
        overrides.append("data=DATA if args.data is None else None")
    if deploy:
        overrides.append("deploy=True")
    if contract:
        overrides.append("contract=True")
    lines += [
        "", "", "def main(argv=None):",
        "    parser = argparse.ArgumentParser(description=__doc__, epilog=DATA_HELP)",
        "    parser.add_argument('--out', type=Path, default=Path('xprune_out'),",
        "                        help='folder for model.pt, recipe.yaml, metrics.json')",
        "    parser.add_argument('--epochs', type=int, default=None,",
        "                        help='epochs of every retraining (default: as recorded)')",
        "    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')",
        "    parser.add_argument('--quiet', action='store_true', help='no progress bars')",
        "    parser.add_argument('--data', type=Path, default=None,",
        "                        help='a .pt or .npz file of train/val/test tensors to use '",
        "                             'instead of the recorded data (see below)')",
        "    parser.add_argument('--threads', type=int, default=THREADS,",
        "                        help='CPU threads (default: as in the study, for identical "
        "results)')",
        "    args = parser.parse_args(argv)",
        "    torch.set_num_threads(args.threads)",
        "    if args.epochs is not None and args.epochs < 1:",
        "        parser.error('--epochs must be a positive integer')",
        "    dist.setup(args.device)",
    ]
    if recipe.groups:   # names and labels are data, read from the file next to the script
        groups_file = _lit(stem + ".groups.pt", "groups file")
        lines += ["    data = build_data(args.data)",
                  "    # the study's sensitive groups (accuracy per group, worst group); data",
                  "    # given as --data brings its own labels or is measured without groups",
                  f"    groups = load_groups(HERE / {groups_file}, data,",
                  "                         stored_labels=args.data is None)",
                  "    study = xp.Study(build_model(), data, seed=SEED, **SAMPLING, **groups)"]
    else:
        lines.append("    study = xp.Study(build_model(), build_data(args.data), seed=SEED, "
                     "**SAMPLING)")
    lines += _steps_code(ops)
    lines += ["", "    if dist.is_main():"]
    if recipe.groups and recipe.groups.get("limits"):   # auto_prune's max_group_drop: re-checked
        lines.append(f"        check_group_limits(study, HERE / {groups_file})")
    lines += _call("metrics = write_outputs", ["study", "args.out"] + overrides, "        ")
    lines += ["        for key in ('params', 'macs', 'accuracy', 'world_size'):",
              "            print(f'{key}: {metrics[key]}')"]
    if recipe.groups:
        lines += ["        for name, value in metrics['per_group_accuracy'].items():",
                  "            print(f'accuracy[{name}]: {value}')",
                  "        print(f\"worst_group_accuracy: {metrics['worst_group_accuracy']}\")",
                  "        for limit in metrics.get('group_limits', []):",
                  "            print(f'group limit: {limit}')"]
    lines += [
              "    dist.teardown()", "", "",
              "if __name__ == '__main__':", "    main()", ""]
    text = "\n".join(lines)
    ast.parse(text)  # a generated script that does not parse is a bug here, not the user's
    return text


def write_script(recipe: Recipe, path: str | Path, *, study=None, deploy: bool = False,
                 contract: bool = False) -> Path:
    """Write the script for ``recipe`` to ``path`` (plus ``<name>.weights.pt`` /
    ``<name>.data.pt`` next to it when the recipe holds weights or data in memory, and
    ``<name>.groups.pt`` (group names and labels) for a study with sensitive groups)."""
    path = as_path(path, call=_CALL)
    if path.suffix != ".py":
        raise ConfigError.bad_value(_CALL, "path", "a file name ending in .py", str(path))
    text = render_script(recipe, path.name, study=study, deploy=deploy, contract=contract)
    check_target(path, call=_CALL)  # a folder or a device: refused before any side file
    stem = path.stem
    # every file is replaced atomically: a failure leaves the previous one intact
    if recipe.model_state is not None:
        torch_save({k: v.detach().cpu() for k, v in recipe.model_state.items()},
                   path.with_name(stem + ".weights.pt"), call=_CALL)
    elif recipe.model.get("weights"):
        write_bytes(path.with_name(stem + ".weights.pt"),
                    recipe.resolve(recipe.model["weights"]).read_bytes(), call=_CALL)
    if recipe.groups:   # names (and labels the data does not carry) for load_groups
        from ..record.recipe.groups import groups_payload, read_groups_file

        labels = recipe.group_labels
        if labels is None and recipe.groups.get("file"):
            _, labels, _ = read_groups_file(recipe.resolve(recipe.groups["file"]), _CALL)
        torch_save(groups_payload(recipe.groups["names"], labels, recipe.groups.get("limits")),
                   path.with_name(stem + ".groups.pt"), call=_CALL)
    if recipe.data_splits is not None:
        torch_save(recipe.data_splits, path.with_name(stem + ".data.pt"), call=_CALL)
    elif "file" in recipe.data:
        write_bytes(path.with_name(stem + ".data.pt"),
                    recipe.resolve(recipe.data["file"]).read_bytes(), call=_CALL)
    write_text(path, text, call=_CALL)
    path.chmod(path.stat().st_mode | 0o111)  # it starts with a shebang: make it runnable
    return path
