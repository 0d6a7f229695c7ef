"""Helpers for driving JupyterLab and Notebook 7 pages with Playwright (see ENVIRONMENT.md)."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]


def get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


def wait_for_status(base_url: str, proc, timeout: float = 90.0) -> None:
    """Poll ``/api/status`` until the server answers (or fail with its exit code)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter server exited with code {proc.returncode}")
        try:
            get_json(f"{base_url}/api/status", timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"jupyter server at {base_url} did not answer in {timeout:.0f} s")


def wait_kernel_idle(base_url: str, notebook: str, timeout: float = 90.0) -> str:
    """Wait until the notebook's session has a real kernel that reports ``idle``.

    The page's own "Idle" indicators show idle before any kernel exists, and running cells
    then opens a "Select Kernel" dialog; the server's session list is the reliable signal.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for s in get_json(f"{base_url}/api/sessions"):
            kernel = s.get("kernel") or {}
            if s.get("path", "").endswith(notebook) and kernel.get("execution_state") == "idle":
                return kernel["id"]
        time.sleep(0.25)
    raise TimeoutError(f"no idle kernel for {notebook} after {timeout:.0f} s")


def delete_sessions(base_url: str) -> None:
    """Shut down every session (kernels included); the ``_xsrf`` cookie goes back as header."""
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{base_url}/lab", timeout=10).read()
    token = next((c.value for c in jar if c.name == "_xsrf"), "")
    for s in get_json(f"{base_url}/api/sessions"):
        req = urllib.request.Request(f"{base_url}/api/sessions/{s['id']}", method="DELETE",
                                     headers={"X-XSRFToken": token})
        opener.open(req, timeout=10).read()


def accept_kernel_dialog(page) -> None:
    """If a "Select Kernel" dialog appears anyway, accept the default kernel."""
    dialog = page.locator(".jp-Dialog").filter(has_text="Select Kernel")
    page.add_locator_handler(dialog, lambda: dialog.locator(".jp-mod-accept").click())


def open_notebook(page, url: str, base_url: str, notebook: str) -> None:
    page.goto(url)
    page.wait_for_selector(".jp-NotebookPanel", timeout=60_000)
    wait_kernel_idle(base_url, notebook)
    # clicking a cell gives the notebook focus, so the run commands act on it
    page.locator(".jp-Cell").first.click()


def run_cell(page, index: int, timeout: float = 120_000) -> None:
    """Run code cell ``index`` of the current notebook and wait for its execution count."""
    page.evaluate("""(i) => {
        const nb = window.jupyterapp.shell.currentWidget.content;
        nb.activeCellIndex = i;
        return window.jupyterapp.commands.execute('notebook:run-cell');
    }""", index)
    page.wait_for_function("""(i) => {
        const cell = window.jupyterapp.shell.currentWidget.content.widgets[i];
        return cell.model.executionCount !== null && !cell.hasClass('jp-mod-running')
            && !cell.node.querySelector('.jp-InputPrompt').innerText.includes('*');
    }""", arg=index, timeout=timeout)


def run_all(page) -> None:
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


def code_cells(page) -> list[int]:
    """Indices of the notebook's code cells."""
    return page.evaluate("""() => window.jupyterapp.shell.currentWidget.content.widgets
        .map((c, i) => [c.model.type, i]).filter(x => x[0] === 'code').map(x => x[1])""")


def text(page, css_class: str) -> str:
    return page.locator(f".{css_class}").first.inner_text()


def wait_text(page, css_class: str, needle: str, timeout: float = 30_000) -> None:
    """Wait until the element with ``css_class`` contains ``needle``."""
    page.wait_for_function("""([cls, needle]) => {
        const el = document.querySelector('.' + cls);
        return el !== null && el.innerText.includes(needle);
    }""", arg=[css_class, needle], timeout=timeout)


def click_and_wait(page, css_class: str, needle: str, timeout: float = 60_000) -> float:
    """Click the button with ``css_class``; seconds until the status line contains ``needle``."""
    start = time.perf_counter()
    page.locator(f".{css_class}").first.click()
    wait_text(page, "xprune-status", needle, timeout)
    return time.perf_counter() - start


def params_of(page) -> int:
    """The current parameter count shown in the metrics strip."""
    match = re.search(r"params (\d+)", text(page, "xprune-metrics"))
    assert match, text(page, "xprune-metrics")
    return int(match.group(1))


def select_tab(page, title: str) -> None:
    page.locator(".xprune-panel .lm-TabBar-tab").filter(has_text=title).first.click()
