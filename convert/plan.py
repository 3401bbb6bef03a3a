"""Which artifacts a `--quantize` / `--format` choice produces, and what each file is called.

Every quantized artifact comes with its float reference in the same format: verification and the
benchmark compare against it, and it is what to fall back to when a quantized model disappoints.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecxr.edge_runtime.errors import EdgecxrError

FORMATS = ("tflite", "onnx")
QUANTIZE_CHOICES = ("none", "fp16", "dynamic", "int8", "all")
FORMAT_CHOICES = (*FORMATS, "all")
# ONNX fp16 and dynamic-range models run poorly on ARM CPUs with onnxruntime, so they are not offered.
SUPPORTED = {"tflite": ("none", "fp16", "dynamic", "int8"), "onnx": ("none", "int8")}
FILE_TAGS = {"none": "fp32", "fp16": "fp16", "dynamic": "dynamic", "int8": "int8"}


@dataclass(frozen=True)
class ArtifactPlan:
    format: str
    quantization: str  # none | fp16 | dynamic | int8

    @property
    def filename(self) -> str:
        return f"model_{FILE_TAGS[self.quantization]}.{self.format}"


def plan_artifacts(quantize: str, format: str) -> list[ArtifactPlan]:
    """The artifacts to build, float references first (ONNX int8 is quantized from the float file)."""
    if quantize not in QUANTIZE_CHOICES:
        raise EdgecxrError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, not {quantize!r}")
    if format not in FORMAT_CHOICES:
        raise EdgecxrError(f"--format must be one of {', '.join(FORMAT_CHOICES)}, not {format!r}")
    formats = FORMATS if format == "all" else (format,)
    wanted = ("none", "fp16", "dynamic", "int8") if quantize == "all" else ("none", quantize)
    plans = [ArtifactPlan(f, q) for f in formats for q in SUPPORTED[f] if q in wanted]
    if quantize not in ("none", "all") and not any(p.quantization == quantize for p in plans):
        offers = "; ".join(f"{f} offers {'/'.join(SUPPORTED[f])}" for f in formats)
        raise EdgecxrError(f"--quantize {quantize} is not available for --format {format} ({offers})")
    return plans
