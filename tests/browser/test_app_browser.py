"""App mode in a real browser: ``xprune-nb app`` serves the panel exercise with Voila; the page
shows the panel and the Check button but no code, the buttons work, and the feedback appears
with its ``xprune-feedback`` / ``data-passed`` contract. Set ``XPRUNE_DOCS_SCREENSHOTS=DIR``
to save a screenshot of the page there (docs/classroom.md shows it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from .helpers import CHROMIUM, ROOT, wait_text

pytestmark = pytest.mark.browser

NOTEBOOK = ROOT / "notebooks" / "classroom" / "05_prune_half_app.ipynb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"xprune-nb app exited with code {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"xprune-nb app did not listen on port {port} in {timeout:.0f} s")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """``xprune-nb app`` on a copy of the app exercise; yields its URL and folder."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is required (XPRUNE_REQUIRE_BROWSER=1) but not installed")
    base = tmp_path_factory.mktemp("voila")
    notebook = base / NOTEBOOK.name
    notebook.write_bytes(NOTEBOOK.read_bytes())
    port = _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(base / "config"),
           "JUPYTER_RUNTIME_DIR": str(base / "runtime"), "JUPYTER_DATA_DIR": str(base / "data"),
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
           "JUPYTER_TOKEN": "browser-test-token"}   # the app asks for a token (issue 17)
    cmd = [sys.executable, "-m", "xprune_nb.ui.cli", "app", str(notebook), "--port", str(port),
           "--no-browser"]
    log = open(base / "voila.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=base)
    try:
        _wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}/?token=browser-test-token", base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _feedback(page, needle: str, timeout: float = 60_000) -> str:
    """Wait for the check output to hold feedback containing ``needle``; its data-passed."""
    page.wait_for_function("""(needle) => {
        const el = document.querySelector('.xprune-check-output .xprune-feedback');
        return el !== null && el.innerText.includes(needle);
    }""", arg=needle, timeout=timeout)
    return page.locator(".xprune-check-output .xprune-feedback").first.get_attribute(
        "data-passed")


def test_app_serves_the_exercise_without_code(app, page):
    app, app_dir = app
    page.goto(app)
    page.locator(".xprune-panel").first.wait_for(state="visible", timeout=180_000)
    page.locator(".xprune-check-button").first.wait_for(state="visible", timeout=60_000)
    body = page.locator("body").inner_text()
    assert "Half the parameters, with the mouse" in body        # the markdown is shown
    assert "import xprune_nb" not in body and "ex.CheckBox" not in body  # the code is not
    assert page.locator(".jp-InputArea-editor").count() == 0

    # the gradebook needs a name, asked once; nothing is recorded without it
    page.locator(".xprune-check-button").first.click()
    page.wait_for_function("""() => {
        const el = document.querySelector('.xprune-check-output .xprune-hint');
        return el !== null && el.innerText.includes('Type your name');
    }""", timeout=60_000)
    page.locator(".xprune-student input").first.fill("Ada")
    page.locator(".xprune-student input").first.press("Tab")
    page.locator(".xprune-check-button").first.click()
    assert _feedback(page, "has not been pruned") == "false"
    assert "study." not in page.locator(".xprune-check-output").first.inner_text()

    page.locator(".xprune-hint-button").first.click()
    page.locator(".xprune-check-output .xprune-hint[data-level='1']").wait_for(timeout=30_000)

    page.locator(".xprune-score").first.click()
    wait_text(page, "xprune-status", "Scored", timeout=90_000)
    page.locator(".xprune-prune").first.click()
    wait_text(page, "xprune-status", "Pruned", timeout=90_000)
    page.locator(".xprune-check-button").first.click()
    # the check now reads the pruned study: one of the targets is still missing
    page.wait_for_function("""() => {
        const el = document.querySelector('.xprune-check-output .xprune-feedback');
        return el !== null && !el.innerText.includes('has not been pruned');
    }""", timeout=60_000)
    feedback = page.locator(".xprune-check-output .xprune-feedback").first
    assert feedback.get_attribute("data-passed") == "false"
    text = feedback.inner_text()
    assert "of the original parameters" in text or "below 0.95" in text, text
    assert "study." not in text and "()" not in text and "`" not in text   # words, no code
    # the teacher's gradebook, next to the served notebook, has Ada's two checks
    from xprune_nb.ui.exercises import gradebook

    rows = gradebook.read(app_dir / "xprune_gradebook.csv")
    assert rows["student"].tolist() == ["Ada", "Ada"] and not rows["passed"].any()
    folder = os.environ.get("XPRUNE_DOCS_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.locator(".xprune-check").first.scroll_into_view_if_needed()
        page.screenshot(path=os.path.join(folder, "classroom_app.png"))
