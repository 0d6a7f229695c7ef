"""The ``xprune-nb`` command line: ``demo``, ``run``, ``export``, ``lab`` and ``app``.

Every command runs headless. Errors print one line and exit with status 2; ``--debug`` shows
the traceback instead.

Examples
--------
>>> from xprune_nb.ui.cli import main
>>> main(["run", "no_such_recipe.yaml"])  # the error line goes to stderr
2
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]

PROG = "xprune-nb"
#: kernels ``xprune-nb app`` runs at once by default; idle, unconnected ones go after CULL_IDLE_S
MAX_KERNELS = 10
CULL_IDLE_S = 600


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in [1, 65535], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[common],
        description="Explainable pruning of PyTorch models, from the command line.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", parents=[common], help="run the quick-start study headless",
                          description="Score, prune and retrain the bundled digits CNN; write "
                          "the exported script, the recipe, an HTML report and the model.")
    demo.add_argument("--out", type=Path, default=Path("xprune_demo"), help="output folder")
    demo.add_argument("--criterion", default="taylor", help="importance criterion")
    demo.add_argument("--amount", type=_fraction, default=0.3, help="fraction to prune")
    demo.add_argument("--epochs", type=_positive_int, default=2, help="retraining epochs")
    demo.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                      help="where the study computes (auto: where the model is)")
    demo.add_argument("--samples", type=_positive_int, default=256,
                      help="reference examples for scoring")

    run = sub.add_parser("run", parents=[common], help="run a recipe (YAML or JSON) headless")
    run.add_argument("recipe", type=Path, help="recipe file (.yaml, .yml or .json)")
    run.add_argument("--out", type=Path, default=None,
                     help="output folder (default: RECIPE's name without suffix + '_out')")
    run.add_argument("--epochs", type=_positive_int, default=None,
                     help="epochs of every retraining (default: as in the recipe)")
    run.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                     help="where the study computes: scoring, pruning, retraining, explaining")
    run.add_argument("--trust", "--trust-source", dest="trust", action="store_true",
                     help="trust the recipe: allow it to import and run code it names "
                     "(factories, importable classes, model source code); by default it "
                     "may use only zoo models, bundled datasets and tensor files")

    export = sub.add_parser("export", parents=[common], help="script from a saved study")
    export.add_argument("study", type=Path, help="a study file written by Study.save")
    export.add_argument("script", type=Path, help="the script to write (.py)")
    export.add_argument("--trust", "--trust-source", dest="trust", action="store_true",
                        help="trust the study file: allow importing the model class it names "
                        "(by default only zoo models are rebuilt)")

    lab = sub.add_parser("lab", parents=[common],
                         help="JupyterLab on a copy of the bundled notebooks (the classroom "
                         "exercises in classroom/)")
    lab.add_argument("--dir", type=Path, default=Path("."),
                     help="where to copy the notebooks (default: the current folder)")
    lab.add_argument("--force", action="store_true", help="overwrite existing notebooks")
    lab.add_argument("--no-launch", action="store_true",
                     help="copy the notebooks and print the command, but do not start Jupyter")

    app = sub.add_parser("app", parents=[common],
                         help="serve a notebook as a standalone page (Voila): no code shown",
                         description="Run NOTEBOOK and serve its outputs and widgets (a panel, "
                         "an exercise's Check button) as a web page without the code, with "
                         "Voila. Each visitor gets a fresh kernel.")
    app.add_argument("notebook", type=Path, help="the notebook to serve (.ipynb)")
    app.add_argument("--port", type=_port, default=8866, help="port (default 8866)")
    app.add_argument("--ip", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1, this machine only; "
                     "0.0.0.0 lets a class on the same network reach it)")
    app.add_argument("--max-kernels", type=_positive_int, default=MAX_KERNELS,
                     help=f"most kernels (visitors' pages) running at once (default "
                     f"{MAX_KERNELS}); a page beyond them gets '503: try again later'")
    app.add_argument("--gradebook", type=Path, default=None,
                     help="CSV file where each check a student runs is recorded (default: "
                     "xprune_gradebook.csv next to NOTEBOOK)")
    app.add_argument("--no-browser", action="store_true", help="do not open a browser")
    app.add_argument("--no-launch", action="store_true",
                     help="print the Voila command, but do not start it")
    return parser


# ------------------------------------------------------------------ commands
def _write_all(study, out: Path, script_name: str, *, report: bool = True) -> dict:
    from ..export import write_outputs
    from ..export.report import write_report

    metrics = write_outputs(study, out)
    study.export_script(out / script_name)
    if report:
        write_report(study, out)
    return metrics


def _summary(study, out: Path) -> None:
    frame = study.compare(0, study.current)
    print(frame.to_string(float_format=lambda x: f"{x:.4g}"))
    print(f"\nwritten to {out}: " + ", ".join(sorted(p.name for p in out.iterdir()
                                                      if p.is_file())))


def check_out_dir(out: Path, call: str, param: str = "--out") -> Path:
    """``out`` as a folder the command can write into, checked before any work: an existing
    folder, or a new one whose nearest existing parent is a writable folder.

    Examples
    --------
    >>> check_out_dir(Path("/dev/null"), "xprune-nb demo")
    Traceback (most recent call last):
    ...
    xprune_nb.core.errors.StudyFileError: xprune-nb demo(--out=...): expected a folder ...
    """
    from ..core.errors import StudyFileError

    def refuse(why: str):
        return StudyFileError(f"{call}({param}=...): expected a folder (existing or new) to "
                              f"write into, got {str(out)!r}: {why}.")

    if out.exists() and not out.is_dir():
        raise refuse("it is a file, not a folder" if out.is_file() else
                     "it is not a folder (a device, pipe or socket)")
    parent = out
    while not parent.exists():
        if parent.is_symlink():
            raise refuse(f"{str(parent)!r} is a broken symbolic link")
        parent = parent.parent
    if not parent.is_dir():
        raise refuse(f"{str(parent)!r} is a file, so no folder can be made under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise refuse(f"the folder {str(parent)!r} is not writable")
    return out


def _demo(args) -> int:
    import xprune_nb as xp

    xp.criteria.get(args.criterion, "Study.score")  # fail before any work on a typo
    check_out_dir(args.out, "xprune-nb demo")
    print(f"{PROG} demo: digits_cnn on digits, {args.criterion} scores, prune "
          f"{args.amount:.0%}, retrain {args.epochs} epochs", flush=True)
    study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"), seed=0,
                     device=args.device)
    # the one progress protocol: progress=True shows the same bar as in a notebook
    study.score(args.criterion, samples=args.samples, progress=True)
    study.prune(args.amount)
    study.retrain(epochs=args.epochs)
    _write_all(study, args.out, "prune_digits.py")
    _summary(study, args.out)
    return 0


def _run(args) -> int:
    import xprune_nb as xp

    from ..record import distributed
    from ..record.recipe import Recipe

    out = check_out_dir(args.out or args.recipe.with_name(args.recipe.stem + "_out"),
                        "xprune-nb run")
    recipe = Recipe.load(args.recipe)
    distributed.setup(args.device)
    try:
        study = xp.Study.from_recipe(recipe, epochs=args.epochs, trust_source=args.trust,
                                     device=args.device)
        if distributed.is_main():
            _write_all(study, out, "reproduce.py")
            _summary(study, out)
    finally:
        distributed.teardown()
    return 0


def _export(args) -> int:
    import xprune_nb as xp

    study = xp.Study.load(args.study, trust_source=args.trust)
    path = study.export_script(args.script)
    print(f"wrote {path}")
    return 0


def bundled_notebooks() -> Path:
    """The notebooks shipped with the package (or, in a source checkout, the repository's)."""
    from importlib import resources

    from ..core.errors import StudyFileError

    installed = Path(str(resources.files("xprune_nb.ui"))) / "notebooks"
    checkout = Path(__file__).resolve().parents[2] / "notebooks"
    for folder in (installed, checkout):
        if folder.is_dir() and any(folder.glob("*.ipynb")):
            return folder
    raise StudyFileError("xprune-nb lab: no bundled notebooks found in this installation.")


def _is_root() -> bool:
    return getattr(os, "geteuid", lambda: -1)() == 0


def lab_command(folder: Path) -> list[str]:
    """The JupyterLab command ``xprune-nb lab`` runs (as root, with ``--allow-root``: Jupyter
    refuses root without it, and containers and classroom VMs run as root)."""
    command = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={folder}"]
    return command + (["--allow-root"] if _is_root() else [])


#: never copied by ``xprune-nb lab`` (nor packaged): the teacher versions of the exercises
TEACHER_ONLY = ("solutions",)


def lab_files(source: Path) -> list[Path]:
    """The notebooks (and the classroom's nbgrader config template) ``xprune-nb lab`` copies,
    relative to ``source``: the main notebooks and the student versions of the classroom
    exercises, never the teacher solutions."""
    files = [p for p in source.rglob("*") if p.is_file()
             and (p.suffix == ".ipynb" or p.name == "nbgrader_config.py")
             and not set(p.relative_to(source).parts) & {*TEACHER_ONLY, ".ipynb_checkpoints"}]
    return sorted(p.relative_to(source) for p in files)


def _lab(args) -> int:
    from ..core.atomic import write_bytes
    from ..core.errors import StudyFileError

    call = "xprune-nb lab"
    source = bundled_notebooks()
    target = args.dir
    try:
        target.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise StudyFileError(f"{call}(--dir=...): expected a folder (existing or new), got "
                             f"{str(target)!r}: it is a file.") from exc
    except OSError as exc:
        raise StudyFileError(f"{call}(--dir=...): cannot make the folder {str(target)!r}: "
                             f"{exc.strerror or exc}.") from exc
    for rel in lab_files(source):
        dest = target / rel
        if dest.is_symlink():
            # never write through a link: its target may be any file of the user's
            print(f"kept {dest} (a symbolic link: not followed, not replaced; remove it to "
                  "get a fresh copy)")
            continue
        if dest.exists() and not args.force:
            print(f"kept {dest} (exists; --force overwrites it)")
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(dest, (source / rel).read_bytes(), call=call)   # atomic, replaces a file only
        print(f"copied {dest}")
    command = lab_command(target)
    if args.no_launch:
        print("start it with: " + " ".join(command))
        return 0
    import importlib.util

    if importlib.util.find_spec("jupyterlab") is None:
        from ..core.errors import MissingDependencyError

        raise MissingDependencyError.for_package("jupyterlab", "xprune-nb lab", "lab")
    from .serve import run_until_stopped

    return run_until_stopped(command)


def app_command(notebook: Path, *, port: int = 8866, ip: str = "127.0.0.1",
                browser: bool = True, max_kernels: int = MAX_KERNELS) -> list[str]:
    """The Voila command that serves ``notebook`` (sources stripped, tracebacks hidden).

    The page asks for a token (``Voila.auto_token``: the one in ``JUPYTER_TOKEN``, which
    ``xprune-nb app`` sets to a fresh one, or one Voila makes and prints), and at most
    ``max_kernels`` kernels run at once; kernels idle for ``CULL_IDLE_S`` seconds with no page
    connected are ended (jupyter_server's culling), freeing their places.
    """
    command = [sys.executable, "-m", "voila", str(notebook), f"--port={port}",
               f"--Voila.ip={ip}", "--Voila.port_retries=0", "--strip_sources=True",
               "--show_tracebacks=False", "--Voila.auto_token=True",
               "--VoilaConfiguration.multi_kernel_manager_class="
               "xprune_nb.ui.app_kernels.LimitedKernelManager",
               f"--LimitedKernelManager.max_kernels={max_kernels}",
               f"--MappingKernelManager.cull_idle_timeout={CULL_IDLE_S}",
               "--MappingKernelManager.cull_interval=60"]
    return command + ([] if browser else ["--no-browser"])


def _app(args) -> int:
    import importlib.util

    from ..core.errors import ConfigError, MissingDependencyError

    notebook = args.notebook
    if notebook.suffix != ".ipynb" or not notebook.is_file():
        raise ConfigError.bad_value("xprune-nb app", "NOTEBOOK", "an existing .ipynb file",
                                    str(notebook))
    command = app_command(notebook, port=args.port, ip=args.ip, browser=False,
                          max_kernels=args.max_kernels)
    if args.no_launch:
        print("start it with: " + " ".join(command))
        return 0
    if importlib.util.find_spec("voila") is None:
        raise MissingDependencyError.for_package("voila", "xprune-nb app", "classroom")
    # a token, as Jupyter has one: only who has the URL gets a page (and a kernel); kept out
    # of the command line, which other users of the machine can read
    token = os.environ.get("JUPYTER_TOKEN") or secrets.token_hex(24)
    host = "localhost" if args.ip in ("", "0.0.0.0", "::") else args.ip
    url = f"http://{host}:{args.port}/?token={token}"
    print(f"{PROG} app: serving {notebook} (Ctrl-C stops), at most {args.max_kernels} "
          f"visitors at once.\n    To open it, copy and paste this URL (it holds the token; "
          f"share it only with your class):\n        {url}", flush=True)
    from .serve import open_when_listening, run_until_stopped

    # each check box records its checks here (xprune_nb.ui.exercises.gradebook)
    book = (args.gradebook or notebook.parent / "xprune_gradebook.csv").resolve()
    print(f"    Checks are recorded in {book}", flush=True)
    if not args.no_browser:
        open_when_listening(url, args.ip, args.port)
    # Voila and its kernels end with us: Ctrl-C, SIGTERM and SIGHUP stop the whole group
    return run_until_stopped(command, env={**os.environ, "JUPYTER_TOKEN": token,
                                           "XPRUNE_GRADEBOOK": str(book)})


_COMMANDS = {"demo": _demo, "run": _run, "export": _export, "lab": _lab, "app": _app}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``xprune-nb``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line instead of a traceback
        if args.debug:
            raise
        from ..core.errors import XPruneError

        text = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, XPruneError):
            text = f"{type(exc).__name__}: {text} (run with --debug for the traceback)"
        print(f"{PROG}: error: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
