"""``detkit export WEIGHTS``: a deployable SavedModel, TF Lite or ONNX model."""

from __future__ import annotations

from rich.markup import escape

from detkit.cli.app import console, warn
from detkit.cli._command import register
from detkit.commands.export import ExportResult, Options, run


def _render(result: ExportResult) -> None:
    for note in result.notes:
        warn(note)
    s = result.settings
    kind = s.format + (f" {s.quantize}" if s.quantize else "")
    outputs = ", ".join(s.outputs)
    console.print(f"export: {escape(s.model)} (width {s.width:g}) as {kind}: input "
                  f"(B, {s.input_size}, {s.input_size}, 3) uint8 RGB letterboxed, outputs "
                  f"{outputs}", highlight=False, soft_wrap=True)
    console.print(f"checked on {result.check_images} images: largest difference from the "
                  f"Keras model {result.max_abs_diff:.3g}", highlight=False, soft_wrap=True)
    console.print(f"wrote {escape(str(result.out))} ({result.size_bytes / 2**20:.2f} MB) and "
                  f"{escape(str(result.manifest))} in {result.seconds:.1f} s",
                  highlight=False, soft_wrap=True)


register("export", Options, run, _render)
