"""IPython extension: ``%load_ext xprune_nb`` registers the ``%xprune`` line magic.

``%xprune panel STUDY``
    Show the interactive panel of the study held in the variable ``STUDY``.
``%xprune demo [MODEL]``
    Build a study on a bundled zoo model (default ``digits_cnn``) and its dataset, and show its
    panel; the study is ``panel.study``.

Both return the :class:`~xprune_nb.ui.widgets.Panel`, so the panel shows as the cell's result and
can be kept: ``p = %xprune demo``.

Examples
--------
>>> from IPython.testing.globalipapp import get_ipython  # doctest: +SKIP
>>> ip = get_ipython(); ip.run_line_magic("load_ext", "xprune_nb")  # doctest: +SKIP
>>> panel = ip.run_line_magic("xprune", "demo")  # doctest: +SKIP
"""

from __future__ import annotations

import shlex

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

__all__ = ["XPruneMagics", "load_ipython_extension"]

USAGE = """Usage:
  %xprune panel STUDY     show the panel of the Study in variable STUDY
  %xprune demo [MODEL]    build a study on a bundled model (default digits_cnn) and show it"""


@magics_class
class XPruneMagics(Magics):
    """The ``%xprune`` line magic."""

    @line_magic
    def xprune(self, line: str):
        """Show xprune_nb panels: ``%xprune panel STUDY`` or ``%xprune demo [MODEL]``."""
        try:
            args = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%xprune: cannot parse {line!r} ({exc}).\n{USAGE}") from None
        if not args:
            raise UsageError(USAGE)
        command, rest = args[0], args[1:]
        if command == "panel":
            return self._panel(rest)
        if command == "demo":
            return self._demo(rest)
        raise UsageError(f"%xprune: unknown command {command!r}; valid commands are 'demo', "
                         f"'panel'.\n{USAGE}")

    def _panel(self, args: list[str]):
        from ..study import Study
        from .widgets import Panel

        if len(args) != 1:
            raise UsageError(f"%xprune panel: expected one variable name, got {args}.\n{USAGE}")
        name = args[0]
        if name not in self.shell.user_ns:
            raise UsageError(f"%xprune panel: no variable named {name!r} in this notebook; "
                             f"create one first, e.g. {name} = xp.Study(model, data).")
        study = self.shell.user_ns[name]
        if not isinstance(study, Study):
            raise UsageError(f"%xprune panel: {name!r} holds an object of type "
                             f"{type(study).__name__}, not an xprune_nb.Study.")
        return Panel(study)

    def _demo(self, args: list[str]):
        from ..data import public as datasets
        from ..models import zoo
        from ..study import Study
        from .widgets import Panel

        if len(args) > 1:
            raise UsageError(f"%xprune demo: expected at most one model name, got {args}.\n"
                             f"{USAGE}")
        name = args[0] if args else "digits_cnn"
        if name not in zoo.available():
            raise UsageError(f"%xprune demo: unknown model {name!r}; valid names are "
                             + ", ".join(repr(n) for n in zoo.available()) + ".")
        meta = zoo.info(name)
        data = datasets.load(meta["dataset"], **meta["dataset_options"])
        return Panel(Study(zoo.load(name), data, seed=0))


def load_ipython_extension(ipython) -> None:
    """Register the ``%xprune`` magic (``%load_ext xprune_nb``)."""
    ipython.register_magics(XPruneMagics)
