"""Export section: the file names, and a preview of what was written."""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as W

from ._common import note_html

__all__ = ["ExportView"]

#: Lines of an exported script shown in the preview.
PREVIEW_LINES = 80


class ExportView:
    """File names for :meth:`Study.export_script`, the recipe and ONNX, and what was written."""

    def __init__(self) -> None:
        self.script_path = W.Text(value="pruned_study.py", description="script",
                                  layout=W.Layout(width="340px"))
        self.recipe_path = W.Text(value="pruned_study.yaml", description="recipe",
                                  layout=W.Layout(width="340px"))
        self.recipe_button = W.Button(description="Export recipe", icon="file-text-o",
                                      tooltip="Save the recipe (YAML or JSON by extension)")
        self.recipe_button.add_class("xprune-export-recipe")
        self.onnx_path = W.Text(value="pruned_model.onnx", description="ONNX",
                                layout=W.Layout(width="340px"))
        self.onnx_button = W.Button(description="Export ONNX", icon="cube",
                                    tooltip="Write the current model as ONNX (BatchNorm folded, "
                                            "outputs checked with onnxruntime); needs the "
                                            "deploy extra")
        self.onnx_button.add_class("xprune-onnx")
        self.preview = W.HTML()
        help_text = note_html(
            "<b>Export</b> (top bar) writes a standalone Python script that reproduces the "
            "current step from the original model; the recipe is the same steps as data, for "
            "<code>xprune-nb run</code>. <b>Export ONNX</b> writes the current model for "
            "deployment (BatchNorm folded into the layer before it, masks baked in, outputs "
            "checked against the study's model with onnxruntime; needs "
            "<code>pip install 'xprune_nb[deploy]'</code>). Relative paths are relative to "
            "the notebook's folder.")
        self.widget = W.VBox([W.HTML(help_text), self.script_path,
                              W.HBox([self.recipe_path, self.recipe_button]),
                              W.HBox([self.onnx_path, self.onnx_button]), self.preview])

    def show_onnx(self, path: Path) -> None:
        size = Path(path).stat().st_size
        self.preview.value = (f"<b>ONNX</b> written to <code>{html.escape(str(path))}</code> "
                              f"({size / 1024:.1f} KiB); its outputs matched the study's model "
                              "in onnxruntime.")

    def show_file(self, path: Path, kind: str) -> None:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        shown = "\n".join(lines[:PREVIEW_LINES])
        more = (f"\n… {len(lines) - PREVIEW_LINES} more lines" if len(lines) > PREVIEW_LINES
                else "")
        self.preview.value = (
            f"<b>{html.escape(kind)}</b> written to <code>{html.escape(str(path))}</code> "
            f"({len(lines)} lines):<pre style='max-height:320px;overflow:auto;font-size:11px;"
            f"background:#f7f7f7;padding:6px'>{html.escape(shown + more)}</pre>")
