"""The IPython extension: ``%load_ext xprune_nb`` and the ``%xprune`` magic."""

from __future__ import annotations

import pytest

pytest.importorskip("IPython")
pytest.importorskip("ipywidgets")

from IPython.core.error import UsageError  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

import xprune_nb as xp  # noqa: E402


@pytest.fixture(scope="module")
def shell():
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "xprune_nb")
    return ip


def test_load_ext_registers_the_magic(shell):
    assert "xprune" in shell.magics_manager.magics["line"]


def test_panel_shows_the_named_study(shell, digits):
    study = xp.Study(xp.zoo.load("digits_cnn"), digits, seed=0)
    shell.user_ns["my_study"] = study
    panel = shell.run_line_magic("xprune", "panel my_study")
    assert isinstance(panel, xp.Panel) and panel.study is study
    panel.close()


def test_demo_builds_a_study_on_the_bundled_model(shell):
    panel = shell.run_line_magic("xprune", "demo")
    assert isinstance(panel, xp.Panel)
    assert panel.study.model_source == {"kind": "zoo", "name": "digits_cnn"}
    assert panel.study.data.num_classes == 10
    panel.close()


@pytest.mark.parametrize("line, message", [
    ("", "Usage:"),
    ("explode", "unknown command 'explode'; valid commands are 'demo', 'panel'"),
    ("panel", "expected one variable name"),
    ("panel nowhere", "no variable named 'nowhere'"),
    ("panel not_a_study", "'not_a_study' holds an object of type int, not an xprune_nb.Study"),
    ("demo resnet50", "unknown model 'resnet50'; valid names are"),
    ("panel 'unclosed", "cannot parse"),
])
def test_usage_errors_say_what_is_wrong(shell, line, message):
    shell.user_ns["not_a_study"] = 3
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("xprune", line)
