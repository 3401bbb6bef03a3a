"""The one table of model formats: what `convert` builds, the runtime opens and `bench` lists.

Each row is a file suffix with a quantization: its file name, the runtime that runs it on the edge
and the tolerance its verification against the Keras model must meet. fp32 must reproduce the
Keras probabilities to 1e-4 (only float rounding differs). fp16 weights are rounded to 11
significant bits, which moves probabilities by about 1e-3: at least 99 % label agreement and at
most 0.05 in probability. Dynamic-range and int8 models quantize weights (and activations) to 8
bits; probabilities move by a few hundredths, so they are held to label agreement only (98 %).

Agreement is counted on the images whose Keras probability lies further from the threshold than
the format's `threshold_band`: closer than that, which side an image falls on is decided by
rounding, and rounding differs between CPUs of one machine kind (AVX2 and AVX-512 kernels in
oneDNN and XNNPACK). A tiny model whose probabilities crowd the threshold then fails on one host
and passes on another, while a real model has few such images (`make demo`'s compact run,
2026-12-03: 1 of its 500 verification films within each band). The bands:
- fp16: 0.01, about 1.5x the largest fp16 |dp| measured on the real models (0.0034 compact,
  0.0067 Lite0, 500 validation films each): nearer the threshold a flip is within fp16's own error.
- dynamic and int8: 2/256, one step of the 8-bit output (a sigmoid output quantized over [0, 1]
  in 256 steps) plus the one step by which kernels of two CPUs may round apart.
fp32 has no band: its flips would be bugs, and its max |dp| check holds it anyway.
ONNX fp16 and dynamic-range models run poorly on ARM CPUs with onnxruntime: not offered.

Two rows are for phones (docs/mobile.md). `ort` is the ONNX model in ORT Mobile's own format, which
onnxruntime (and its smaller mobile build) loads as it is. `mobile` is an int8 TFLite model whose
graph takes a whole uint8 RGB frame and does the preprocessing itself, with TFLite metadata, so
MediaPipe Tasks or the Android ML binding run it with no code of edgecxr's; its file is
`model_int8_mobile.tflite`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Quantization names in the metadata, and the tags used in file names and on the command line.
QUANT_TAGS = {"none": "fp32", "fp16": "fp16", "dynamic": "dynamic", "int8": "int8"}


@dataclass(frozen=True)
class Tolerance:
    min_agreement: float | None = None
    max_abs_diff: float | None = None
    threshold_band: float = 0.0  # agreement is counted only on images further than this from the threshold

    def describe(self) -> str:
        parts = []
        if self.min_agreement is not None:
            away = f" away from the threshold (|p - t| > {self.threshold_band:.3g})" if self.threshold_band else ""
            parts.append(f"agreement >= {self.min_agreement:.0%}{away}")
        if self.max_abs_diff is not None:
            parts.append(f"max |dp| <= {self.max_abs_diff:g}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Runtime:
    """The packages that run one file format on the edge, in the order the backend tries them."""

    name: str  # how docs and `bench` name it
    packages: tuple[tuple[str, str], ...]  # (PyPI name, module that must import for it to be usable)

    @property
    def install_hint(self) -> str:
        return f"pip install {self.packages[0][0]}"


@dataclass(frozen=True)
class ExportFormat:
    format: str  # tflite | onnx | ort | mobile: the key of its builder (convert) and backend (edge_runtime)
    quantization: str  # none | fp16 | dynamic | int8, as in the metadata
    runtime: Runtime  # the edge runtime that runs it
    tolerance: Tolerance
    file_suffix: str | None = None  # when the file's suffix is not the format's name
    # "tensor": the graph takes the preprocessed input (preprocessing.py runs before it);
    # "frame": a uint8 RGB frame, preprocessed inside the graph.
    takes: str = "tensor"

    @property
    def suffix(self) -> str:
        return self.file_suffix or f".{self.format}"

    @property
    def tag(self) -> str:
        """tflite-int8, onnx-fp32, ...: how --formats and the bench table name it."""
        return f"{self.format}-{QUANT_TAGS[self.quantization]}"

    @property
    def filename(self) -> str:
        named = "" if self.file_suffix is None else f"_{self.format}"
        return f"model_{QUANT_TAGS[self.quantization]}{named}{self.suffix}"


_FP32 = Tolerance(max_abs_diff=1e-4)
_FP16 = Tolerance(min_agreement=0.99, max_abs_diff=0.05, threshold_band=0.01)
_8BIT = Tolerance(min_agreement=0.98, threshold_band=2 / 256)
TFLITE_RUNTIME = Runtime("LiteRT (ai-edge-litert) or tflite-runtime",
                         (("ai-edge-litert", "ai_edge_litert.interpreter"), ("tflite-runtime", "tflite_runtime.interpreter")))
ONNX_RUNTIME = Runtime("onnxruntime", (("onnxruntime", "onnxruntime"),))
MOBILE_RUNTIME = Runtime("MediaPipe Tasks or LiteRT (on the edge: ai-edge-litert or tflite-runtime)",
                         TFLITE_RUNTIME.packages)

# Adding a format is a row here (one per quantization it offers), a builder registered under its
# name in convert/builders.py and a backend registered under it in backends.py (docs/convert.md).

EXPORT_FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("tflite", "none", TFLITE_RUNTIME, _FP32),
    ExportFormat("tflite", "fp16", TFLITE_RUNTIME, _FP16),
    ExportFormat("tflite", "dynamic", TFLITE_RUNTIME, _8BIT),
    ExportFormat("tflite", "int8", TFLITE_RUNTIME, _8BIT),
    ExportFormat("onnx", "none", ONNX_RUNTIME, _FP32),
    ExportFormat("onnx", "int8", ONNX_RUNTIME, _8BIT),
    ExportFormat("ort", "none", ONNX_RUNTIME, _FP32),
    ExportFormat("ort", "int8", ONNX_RUNTIME, _8BIT),
    ExportFormat("mobile", "int8", MOBILE_RUNTIME, _8BIT, file_suffix=".tflite", takes="frame"),
)
FORMAT_NAMES = tuple(dict.fromkeys(f.format for f in EXPORT_FORMATS))
EDGE_SUFFIXES = tuple(dict.fromkeys(f.suffix for f in EXPORT_FORMATS))


def runtime_of(format: str) -> Runtime:
    """The runtime that runs every quantization of one file format."""
    return next(f.runtime for f in EXPORT_FORMATS if f.format == format)


def tolerance_of(quantization: str) -> Tolerance:
    """Every format of one quantization is held to the same tolerance."""
    return next(f.tolerance for f in EXPORT_FORMATS if f.quantization == quantization)


def format_of_file(path: str | Path) -> ExportFormat | None:
    """The table row a file name like model_int8.tflite stands for (None for other names)."""
    name = Path(path).name
    return next((f for f in EXPORT_FORMATS if f.filename == name), None)
