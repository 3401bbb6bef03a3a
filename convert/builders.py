"""One builder per file format of the table (edge_runtime/formats.py), registered under its name.

A builder writes the artifact of one table row to a target path and returns the converter facts the
metadata records; beside it are how to read the artifact's tensor facts back from the file and the
int8 weight grid its quantizer rounds to (bias correction compensates exactly that grid). The
exporter looks the builder up by the row's format and has no branch of its own per format.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgecxr.edge_runtime.formats import ExportFormat

from . import mobile_export, onnx_export, tflite_export
from .tensor_info import mobile_io, onnx_io, ort_io, tflite_io


@dataclass(frozen=True)
class Builder:
    build: Callable  # (row, target path, ExportContext) -> converter facts for the metadata
    tensor_facts: Callable[[Path], dict]  # input, probability and feature tensors read from the file
    weight_steps: int  # int8 weights are rounded to max|w| / weight_steps per output channel
    # A format that is another one's file re-encoded (.ort from .onnx): when that twin of the same
    # quantization was published in this run, `from_twin(twin path, twin facts, target)` converts it
    # as it is, so the two files hold the same model (bias correction included).
    twin: str | None = None
    from_twin: Callable | None = None


BUILDERS: dict[str, Builder] = {}


def register(format: str, *, tensor_facts: Callable[[Path], dict], weight_steps: int, twin: str | None = None,
             from_twin: Callable | None = None):
    def decorator(build):
        BUILDERS[format] = Builder(build, tensor_facts, weight_steps, twin, from_twin)
        return build
    return decorator


def calibration_inputs(plan: ExportFormat, ctx):
    return ctx.calibration.inputs if plan.quantization == "int8" else None


@register("tflite", tensor_facts=tflite_io, weight_steps=tflite_export.WEIGHT_STEPS)
def build_tflite(plan: ExportFormat, target: Path, ctx) -> dict:
    target.write_bytes(tflite_export.convert_tflite(ctx.saved_model(), plan.quantization, calibration_inputs(plan, ctx)))
    return {"converter": "tf.lite.TFLiteConverter.from_saved_model",
            "quantizer": tflite_export.QUANTIZER if plan.quantization != "none" else None}


@register("onnx", tensor_facts=onnx_io, weight_steps=onnx_export.WEIGHT_STEPS)
def build_onnx(plan: ExportFormat, target: Path, ctx) -> dict:
    # The float model is both the fp32 artifact and the int8 quantizer's input: converted once per context.
    float_model = ctx.intermediate("float.onnx", lambda path: path.write_bytes(
        onnx_export.convert_onnx_float(*ctx.serving_function(), ctx.options.opset)))
    converter = f"tf2onnx.convert.from_function (opset {ctx.options.opset})"
    if plan.quantization == "none":
        shutil.copyfile(float_model, target)
        return {"converter": converter, "quantizer": None}
    onnx_export.quantize_onnx_int8(float_model, calibration_inputs(plan, ctx), target)
    return {"converter": converter, "quantizer": onnx_export.QUANTIZER}


def ort_from_onnx(onnx_file: Path, onnx_facts: dict, target: Path) -> dict:
    onnx_export.convert_to_ort(onnx_file, target)
    return {**onnx_facts, "converted_from": onnx_file.name,
            "converter": f"{onnx_facts.get('converter')}, then {onnx_export.ORT_CONVERTER}"}


@register("ort", tensor_facts=ort_io, weight_steps=onnx_export.WEIGHT_STEPS, twin="onnx", from_twin=ort_from_onnx)
def build_ort(plan: ExportFormat, target: Path, ctx) -> dict:
    # The .onnx of the same quantization, made by its own builder, then turned into ORT's format.
    onnx_file = ctx.workdir / f"{target.name}.onnx"
    facts = build_onnx(plan, onnx_file, ctx)
    onnx_export.convert_to_ort(onnx_file, target)
    return {**facts, "converter": f"{facts['converter']}, then {onnx_export.ORT_CONVERTER}"}


@register("mobile", tensor_facts=mobile_io, weight_steps=tflite_export.WEIGHT_STEPS)
def build_mobile(plan: ExportFormat, target: Path, ctx) -> dict:
    source = ctx.run.metadata
    spec = source.preprocessing
    frame = mobile_export.frame_size(spec)
    described = mobile_export.description(list(source.labels), source.positive_label, source.threshold,
                                          source.arch, frame)
    target.write_bytes(mobile_export.convert_mobile(ctx.keras_model, spec, list(source.labels), source.positive_label,
                                                    ctx.plan_inputs(plan, ctx.calibration), described, ctx.workdir))
    return {"converter": "tf.lite.TFLiteConverter.from_saved_model", "quantizer": mobile_export.QUANTIZER,
            "frame": {"height": frame[0], "width": frame[1], "channels": 3, "dtype": "uint8"},
            "tflite_metadata": {"name": described.name, "labels": list(described.labels),
                                "description": described.description}}


def builder_of(plan: ExportFormat) -> Builder:
    try:
        return BUILDERS[plan.format]
    except KeyError:
        raise ValueError(f"no builder is registered for format {plan.format!r} (convert/builders.py)") from None
