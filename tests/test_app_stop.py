"""``xprune-nb app`` leaves no process behind: stopped with SIGTERM or SIGINT while a visitor's
kernel runs, Voila and the kernel end with it and the port is free again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest

psutil = pytest.importorskip("psutil")
pytest.importorskip("voila")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
# SIGTERM with a visitor's kernel running; SIGINT (Ctrl-C) on the server alone, to keep it short
@pytest.mark.parametrize("signum, visit", [(signal.SIGTERM, True), (signal.SIGINT, False)])
def test_app_ends_voila_and_its_kernels_on_a_signal(tmp_path, signum, visit):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('hello')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, tmp_path / "hello.ipynb")
    port, token = _free_port(), "a" * 48
    env = {**os.environ, "JUPYTER_TOKEN": token, "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"), "JUPYTER_DATA_DIR": str(tmp_path / "d"),
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "xprune_nb.ui.cli", "app",
                             str(tmp_path / "hello.ipynb"), "--port", str(port),
                             "--no-browser"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _listening(port) or proc.poll() is not None, 90, "the app to listen")
        assert proc.poll() is None
        if visit:   # a visitor: Voila starts a kernel and runs the notebook for the page
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/?token={token}",
                                        timeout=90) as page:
                assert b"hello" in page.read()
        family = psutil.Process(proc.pid).children(recursive=True)
        assert len(family) >= (2 if visit else 1), family        # Voila (and the kernel)
        proc.send_signal(signum)
        proc.wait(timeout=30)
        _wait(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                              for p in family), 20, "Voila and its kernel to end")
        assert not _listening(port)
        assert proc.returncode == 128 + signum
    finally:
        if proc.poll() is None:
            proc.kill()
