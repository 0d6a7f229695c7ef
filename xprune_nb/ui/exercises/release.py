"""Student versions of teacher notebooks, for handing out plain files without nbgrader.

A teacher notebook marks solutions the way nbgrader does (``### BEGIN SOLUTION`` /
``### END SOLUTION`` in code, ``### BEGIN SOLUTION`` in markdown answer cells) and holds
autograder test cells (nbgrader metadata ``grade: true`` on a code cell without a solution).
The student version keeps everything else, replaces each solution region with
``# YOUR CODE HERE`` (markdown: ``YOUR ANSWER HERE``), drops autograder test cells and
outputs, so it runs top to bottom and its checks show not-passed feedback.

Run it as ``python -m xprune_nb.ui.exercises.release SOLUTIONS_DIR OUT_DIR``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

__all__ = ["student_version", "write_student_versions"]

_REGION = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*(\n|$)",
                     re.S | re.M)
_HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[^\n]*(\n|$)",
                     re.S | re.M)


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_autograder_test(cell) -> bool:
    m = _meta(cell)
    return cell["cell_type"] == "code" and bool(m.get("grade")) and not m.get("solution")


def _strip(source: str, markdown: bool) -> str:
    if markdown:
        if "### BEGIN SOLUTION" in source:
            return _REGION.sub("YOUR ANSWER HERE\n", source) if "### END SOLUTION" in source \
                else "YOUR ANSWER HERE"
        return source
    return _REGION.sub(lambda m: f"{m.group(1)}# YOUR CODE HERE{m.group(2)}", source)


def student_version(notebook):
    """A student copy of a teacher notebook (an ``nbformat`` node); the input is unchanged.

    Examples
    --------
    >>> import nbformat
    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
    ...     "x = None\\n### BEGIN SOLUTION\\nx = 42\\n### END SOLUTION")])
    >>> student_version(nb).cells[0].source
    'x = None\\n# YOUR CODE HERE'
    """
    import copy

    nb = copy.deepcopy(notebook)
    cells = []
    for cell in nb.cells:
        if is_autograder_test(cell):
            continue
        source = _HIDDEN.sub("", cell.source)
        cell.source = _strip(source, cell.cell_type == "markdown").rstrip("\n")
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("nbgrader", None)
        cells.append(cell)
    nb.cells = cells
    nb.metadata.pop("widgets", None)
    return nb


def write_student_versions(solutions: str | Path, out: str | Path) -> list[Path]:
    """Write the student version of every ``*.ipynb`` in ``solutions`` to ``out`` (same
    names); returns the paths written."""
    import nbformat

    solutions, out = Path(solutions), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(solutions.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        target = out / path.name
        nbformat.write(student_version(nb), target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m xprune_nb.ui.exercises.release SOLUTIONS_DIR OUT_DIR",
              file=sys.stderr)
        return 2
    for path in write_student_versions(*argv):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
