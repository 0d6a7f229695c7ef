"""Fixtures for the browser tests: a JupyterLab server on 127.0.0.1 started from the test, a
headless Debian Chromium driven by Playwright, and a screenshot of the page on failure."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import CHROMIUM, CHROMIUM_ARGS, ROOT, delete_sessions, wait_for_status

SCREENSHOTS = ROOT / "build" / "screenshots"
NOTEBOOK = ROOT / "notebooks" / "03_interactive_panel.ipynb"


def pytest_collection_modifyitems(config, items):
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("XPRUNE_REQUIRE_BROWSER") == "1":
        return  # CI: a missing browser must fail, not skip; the fixtures raise
    skip = pytest.mark.skip(reason=f"{CHROMIUM} is not installed (apt-get install chromium)")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def jupyter(tmp_path_factory):
    """A JupyterLab server (Notebook 7 pages included) rooted in a folder holding copies of the
    panel notebook; yields ``(base_url, root_dir)``."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is required (XPRUNE_REQUIRE_BROWSER=1) but not installed")
    base = tmp_path_factory.mktemp("jupyter")
    root = base / "root"
    root.mkdir()
    # without its stored outputs: a saved panel must not be mistaken for the freshly run one
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    for name in ("panel_lab.ipynb", "panel_nb7.ipynb"):
        nbformat.write(nb, root / name)
    settings = base / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # no news toast over the page
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port = _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(base / "config"),
           "JUPYTER_RUNTIME_DIR": str(base / "runtime"), "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1",
           "--port", str(port), "--allow-root", "--IdentityProvider.token=",
           "--ServerApp.password=", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly", "--LabApp.expose_app_in_browser=True",
           "--JupyterNotebookApp.expose_app_in_browser=True",
           f"--LabApp.workspaces_dir={base / 'workspaces'}",
           f"--LabApp.user_settings_dir={base / 'settings'}"]
    log = open(base / "server.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_status(url, proc)
        yield url, root
    finally:
        try:
            delete_sessions(url)
        except OSError:
            pass
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)
    context.close()
