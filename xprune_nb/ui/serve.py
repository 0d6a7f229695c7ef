"""Run a server (Voila, JupyterLab) as a child that never outlives us.

The server runs in its own process group. When we are stopped — Ctrl-C (SIGINT), SIGTERM (a
service manager, ``kill``, a test tearing down), SIGHUP (the terminal closed) — or leave for
any other reason, the whole group is asked to stop (SIGTERM: Voila shuts its kernels down),
and whatever still runs after a grace period, the server's kernels included (they run in
sessions of their own), is killed. Without this, ``subprocess.call`` leaves the server
listening, reparented to PID 1, when only the parent gets the signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

__all__ = ["run_until_stopped", "open_when_listening", "GRACE_S"]

#: seconds the server has to shut down (and end its kernels) before it is killed
GRACE_S = 10.0
_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP")
                 if hasattr(signal, n))


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _descendants(pid: int) -> list:
    try:
        import psutil  # comes with ipykernel; without it, the process group is what we end
    except ImportError:
        return []
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _end(proc: subprocess.Popen, grace: float) -> None:
    """Stop ``proc``, its process group and its other descendants: TERM, wait, KILL."""
    others = _descendants(proc.pid)   # the kernels, before their parent is gone
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(proc.pid, signal.SIGKILL)   # anything left in the group
    if proc.poll() is None:
        proc.wait()
    deadline = time.monotonic() + grace
    for child in others:
        try:
            child.terminate()
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - gone already, or does not stop: kill below
            pass
        try:
            if child.is_running():
                child.kill()
        except Exception:  # noqa: BLE001 - gone already
            pass


def run_until_stopped(command: Sequence[str], *, env: Mapping[str, str] | None = None,
                      grace: float = GRACE_S) -> int:
    """Run ``command`` in its own process group until it exits or we get SIGTERM, SIGINT or
    SIGHUP; then end it and everything it started. Returns its exit status (128 + the signal
    number when we were stopped). Signal handlers are installed only in the main thread."""
    import threading

    proc = subprocess.Popen(list(command), env=dict(env) if env is not None else None,
                            start_new_session=True)
    previous = {}

    def stop(signum, frame):
        raise _Stopped(signum)

    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, stop) for s in _SIGNALS}
    try:
        return proc.wait()
    except _Stopped as stopped:
        return 128 + stopped.signum
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    finally:
        for signum in previous:   # a second signal must not cut the cleanup short
            signal.signal(signum, signal.SIG_IGN)
        try:
            _end(proc, grace)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def open_when_listening(url: str, ip: str, port: int, timeout: float = 120.0,
                        keep: float = 30.0) -> None:
    """Open ``url`` (with its token) in a browser once the server listens; Voila's own opener
    would land on its login page, as it does not pass the token. As Jupyter does, the browser
    is given a private local page that redirects to ``url``, so the token stays off the
    browser's command line (which other users of the machine can read)."""
    import html
    import socket
    import tempfile
    import threading
    import webbrowser
    from pathlib import Path

    host = "127.0.0.1" if ip in ("", "0.0.0.0", "::") else ip
    fd, page = tempfile.mkstemp(prefix="xprune_app_", suffix=".html")   # mode 0600
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f'<!DOCTYPE html><meta http-equiv="refresh" content="0;url='
                f'{html.escape(url, quote=True)}"><a href="{html.escape(url, quote=True)}">'
                "open the app</a>\n")

    def wait_then_open() -> None:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    with socket.create_connection((host, port), timeout=1):
                        webbrowser.open(Path(page).as_uri())
                        time.sleep(keep)   # time for the browser to read it
                        return
                except OSError:
                    time.sleep(0.5)
        finally:
            Path(page).unlink(missing_ok=True)

    threading.Thread(target=wait_then_open, daemon=True).start()
