"""Which artifacts a `--quantize` / `--format` choice produces, read from the one format table.

Every quantized artifact comes with its float reference in the same format: verification and the
benchmark compare against it, and it is what to fall back to when a quantized model disappoints.
"""

from __future__ import annotations

from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.formats import EXPORT_FORMATS, FORMAT_NAMES, QUANT_TAGS, ExportFormat

QUANTIZE_CHOICES = (*QUANT_TAGS, "all")
FORMAT_CHOICES = (*FORMAT_NAMES, "all")


def plan_artifacts(quantize: str, format: str) -> list[ExportFormat]:
    """The artifacts to build, float references first (ONNX int8 is quantized from the float file)."""
    if quantize not in QUANTIZE_CHOICES:
        raise EdgecxrError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, not {quantize!r}")
    if format not in FORMAT_CHOICES:
        raise EdgecxrError(f"--format must be one of {', '.join(FORMAT_CHOICES)}, not {format!r}")
    formats = FORMAT_NAMES if format == "all" else (format,)
    wanted = tuple(QUANT_TAGS) if quantize == "all" else ("none", quantize)
    plans = [f for name in formats for f in EXPORT_FORMATS if f.format == name and f.quantization in wanted]
    if quantize not in ("none", "all") and not any(p.quantization == quantize for p in plans):
        offers = "; ".join(f"{name} offers {'/'.join(f.quantization for f in EXPORT_FORMATS if f.format == name)}"
                           for name in formats)
        raise EdgecxrError(f"--quantize {quantize} is not available for --format {format} ({offers})")
    return plans
