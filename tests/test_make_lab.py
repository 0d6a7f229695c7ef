"""`make lab` passes --allow-root when run as root (Jupyter refuses root without it) and hands
ARGS to Jupyter; `xprune-nb app` builds the Voila command it will run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from xprune_nb.ui.cli import app_command, main

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


# ------------------------------------------------------------------ issue 17: lab and app
def test_lab_as_root_allows_root_as_make_lab_does(tmp_path, capsys, monkeypatch):
    for uid, allowed in ((0, True), (1000, False)):
        monkeypatch.setattr(os, "geteuid", lambda uid=uid: uid)
        assert main(["lab", "--no-launch", "--dir", str(tmp_path / "work")]) == 0
        line = capsys.readouterr().out.splitlines()[-1]
        assert line.startswith("start it with: ") and "jupyterlab" in line
        assert ("--allow-root" in line) == allowed, line


def test_lab_never_writes_through_symlinks(tmp_path, capsys):
    from xprune_nb.ui.cli import bundled_notebooks

    names = sorted(p.name for p in bundled_notebooks().glob("*.ipynb"))
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    precious = outside / "precious.txt"
    precious.write_text("keep me")
    (work / names[0]).symlink_to(precious)                  # a link to a file of the user's
    (work / names[1]).symlink_to(outside / "not_yet.txt")   # a dangling link
    for args in (["lab", "--no-launch"], ["lab", "--no-launch", "--force"]):
        assert main([*args, "--dir", str(work)]) == 0
        out = capsys.readouterr().out
        assert precious.read_text() == "keep me"
        assert not (outside / "not_yet.txt").exists()
        assert (work / names[0]).is_symlink() and (work / names[1]).is_symlink()
        assert out.count("a symbolic link: not followed") == 2, out
        assert (work / names[2]).is_file() and not (work / names[2]).is_symlink()


def test_run_and_demo_check_their_out_folder_before_any_work(tmp_path, monkeypatch, capsys):
    import xprune_nb as xp

    def no_work(*a, **k):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(xp.Study, "from_recipe", classmethod(no_work))
    monkeypatch.setattr(xp.Study, "__init__", no_work)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {zoo: toy_mlp}\ndata: {dataset: moons}\nsteps: []\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for argv in (["run", str(recipe), "--out", str(a_file)], ["demo", "--out", "/dev/null"],
                 ["demo", "--out", str(a_file / "sub")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "xprune-nb: error: xprune-nb " in err and "(--out=...): expected a folder" in err
    assert a_file.read_text() == "x"


def test_app_has_a_token_and_a_kernel_limit(tmp_path, capsys, monkeypatch):
    import importlib.util
    import re

    nb = tmp_path / "ex.ipynb"
    nb.write_text("{}")
    runs = []
    monkeypatch.delenv("JUPYTER_TOKEN", raising=False)
    import xprune_nb.ui.serve as serve

    monkeypatch.setattr(serve, "run_until_stopped",
                        lambda cmd, env=None: runs.append((cmd, env)) or 0)
    real_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "voila" else real_spec(name, *a))
    urls = []
    for _ in range(2):
        assert main(["app", str(nb), "--no-browser", "--port", "9101", "--max-kernels", "3"]) == 0
        found = re.findall(r"http://127\.0\.0\.1:9101/\?token=([0-9a-f]{48})\b",
                           capsys.readouterr().out)
        assert len(found) == 1
        urls.append(found[0])
    assert urls[0] != urls[1], "the token must be fresh for every run"
    for (cmd, env), token in zip(runs, urls):
        assert env["JUPYTER_TOKEN"] == token
        assert not any(token in part for part in cmd), "the token leaks into the command line"
        assert "--Voila.auto_token=True" in cmd and "--LimitedKernelManager.max_kernels=3" in cmd
        # the check boxes record into the gradebook next to the notebook
        assert env["XPRUNE_GRADEBOOK"] == str((tmp_path / "xprune_gradebook.csv").resolve())
        assert "--VoilaConfiguration.multi_kernel_manager_class=" \
               "xprune_nb.ui.app_kernels.LimitedKernelManager" in cmd
        assert any(c.startswith("--MappingKernelManager.cull_idle_timeout=") for c in cmd)
    # a token the user set (JUPYTER_TOKEN, as Jupyter reads it) is kept
    monkeypatch.setenv("JUPYTER_TOKEN", "mine")
    assert main(["app", str(nb), "--no-browser"]) == 0
    assert runs[-1][1]["JUPYTER_TOKEN"] == "mine" and "?token=mine" in capsys.readouterr().out


@pytest.mark.slow   # starts Voila and one kernel: ~5 s on an idle machine
def test_app_serves_only_with_the_token_and_at_most_max_kernels(tmp_path):
    """A real Voila: without the token a page load is sent to the login page, with it the
    notebook runs, and a page load beyond --max-kernels gets 503 (no new kernel)."""
    pytest.importorskip("voila")
    import socket
    import time
    import urllib.error
    import urllib.request

    nb = tmp_path / "hello.ipynb"
    nb.write_text('{"cells": [{"cell_type": "code", "execution_count": null, "id": "a", '
                  '"metadata": {}, "outputs": [], "source": ["print(\'hello from xprune\')"]}],'
                  ' "metadata": {"kernelspec": {"display_name": "Python 3", "language": '
                  '"python", "name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JUPYTER_TOKEN": "t0ken", "OMP_NUM_THREADS": "1",
           "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"), "JUPYTER_DATA_DIR": str(tmp_path / "d"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log = open(tmp_path / "app.log", "w")  # noqa: SIM115 - closed below
    # the command `xprune-nb app` runs, with the token it passes (test above); run directly so
    # that ending it here ends Voila and its kernels (own process group)
    proc = subprocess.Popen(app_command(nb, port=port, browser=False, max_kernels=1), env=env,
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                            start_new_session=True)

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(Stay)

    def get(query: str) -> tuple[int, str]:
        try:
            with opener.open(f"http://127.0.0.1:{port}/{query}", timeout=60) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Location", "")

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "app.log").read_text()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.3)
        code, where = get("")
        assert code == 302 and "login" in where, (code, where)
        assert get("?token=wrong")[0] == 302
        code, page = get("?token=t0ken")
        assert code == 200 and "hello from xprune" in page
        assert get("?token=t0ken")[0] == 503       # the one kernel is taken
    finally:
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_the_browser_gets_the_token_from_a_private_page_not_its_command_line(monkeypatch):
    import socket
    import stat
    import threading
    import time
    import webbrowser

    from xprune_nb.ui.serve import open_when_listening

    opened, seen = threading.Event(), {}

    def fake_open(uri):
        page = Path(uri.removeprefix("file://"))
        seen.update(uri=uri, text=page.read_text(), mode=stat.S_IMODE(page.stat().st_mode),
                    page=page)
        opened.set()

    monkeypatch.setattr(webbrowser, "open", fake_open)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        url = f"http://localhost:{port}/?token=s3cret"
        open_when_listening(url, "0.0.0.0", port, timeout=20, keep=0.2)
        assert opened.wait(20), "the browser was never opened"
    assert seen["uri"].startswith("file://") and "s3cret" not in seen["uri"]
    assert url in seen["text"] and seen["mode"] == 0o600
    deadline = time.monotonic() + 10
    while seen["page"].exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not seen["page"].exists(), "the page holding the token was left behind"
