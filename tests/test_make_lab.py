"""`make lab` passes --allow-root when run as root (Jupyter refuses root without it) and hands
ARGS to Jupyter; `xprune-nb app` builds the Voila command it will run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from xprune_nb.cli import app_command, main

ROOT = Path(__file__).resolve().parents[1]


def _lab_line(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # -n prints the commands without running them; -o install skips the install step
    out = subprocess.run(["make", "-n", "-o", "install", "lab", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if "jupyter lab" in line]
    assert len(lines) == 1, out.stdout
    return lines[0]


def test_make_lab_allows_root_only_as_root_and_passes_args():
    line = _lab_line("ARGS=--port 9999 --no-browser")
    assert "--notebook-dir=notebooks" in line
    assert line.rstrip().endswith("--port 9999 --no-browser")
    assert ("--allow-root" in line) == (os.getuid() == 0)


def test_make_lab_without_args():
    assert "--notebook-dir=notebooks" in _lab_line()


def test_app_command_serves_the_notebook_without_sources(tmp_path, capsys):
    nb = tmp_path / "ex.ipynb"
    nb.write_text("{}")
    cmd = app_command(nb, port=9100, browser=False)
    assert cmd[1:4] == ["-m", "voila", str(nb)]
    assert "--port=9100" in cmd and "--no-browser" in cmd and "--strip_sources=True" in cmd
    assert "--Voila.ip=127.0.0.1" in cmd
    assert main(["app", str(nb), "--port", "9100", "--no-browser", "--no-launch"]) == 0
    assert "voila" in capsys.readouterr().out
    assert main(["app", str(tmp_path / "missing.ipynb"), "--no-launch"]) == 2
    err = capsys.readouterr().err
    assert "NOTEBOOK" in err and "an existing .ipynb file" in err
