"""Build hook: package the notebooks (``xprune-nb lab`` copies them from the installed
package) but never the teacher solutions of the classroom exercises, which stay with the
teacher: a student with the package installed must not have them.

Hatch's ``force-include`` ignores ``exclude`` patterns, so the files are listed here one by one.
"""

from __future__ import annotations

from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: folders under notebooks/ that are never packaged
TEACHER_ONLY = ("solutions",)


class NotebooksHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        notebooks = Path(self.root) / "notebooks"
        for path in sorted(notebooks.rglob("*")):
            rel = path.relative_to(notebooks)
            if (path.is_file() and not set(rel.parts) & set(TEACHER_ONLY)
                    and ".ipynb_checkpoints" not in rel.parts):
                build_data["force_include"][str(path)] = f"xprune_nb/ui/notebooks/{rel.as_posix()}"
