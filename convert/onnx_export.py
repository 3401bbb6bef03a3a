"""ONNX artifacts: float through tf2onnx, int8 through onnxruntime static quantization.

tf2onnx's `from_keras` does not understand Keras 3 models, so the float export traces the same
inference-only tf.function the TFLite path uses. int8 quantization lives in `quantize_onnx_int8`
alone, so it can be swapped for another quantizer.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

DEFAULT_OPSET = 17
QUANTIZER = ("onnxruntime.quantization.quantize_static (QDQ, per-channel 7-bit-range int8 "
             "weights, int8 activations, MinMax; output activation kept float)")
# Symmetric int8 weights with reduce_range (see quantize_onnx_int8) span [-64, 64] steps of
# max|w| / 64 per output channel; bias correction compensates exactly this grid.
WEIGHT_STEPS = 64
# Activations that squash a logit into a probability: left unquantized so the probability is not
# rounded to 1/255 steps, which would flip labels near a threshold such as 0.99.
OUTPUT_ACTIVATIONS = ("Sigmoid", "Softmax")


def convert_onnx_float(serve, signature, opset: int = DEFAULT_OPSET) -> bytes:
    """Serialized float ONNX model with a dynamic batch dimension."""
    import tf2onnx

    model_proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=opset)
    return model_proto.SerializeToString()


# onnxruntime's calibrator runs a copy of the model that outputs every tensor's min and max; its
# working memory grows with the batch (Lite0, 1,000 images: 5.8 GB for the whole convert with
# batches of 16, 3.9 GB with 4). The ranges are a min and max over all images, whatever the batch,
# so one image at a time costs only time.
CALIBRATION_BATCH = 1


class ArrayReader:
    """Feeds calibration images to onnxruntime's calibrator one batch at a time, copying only that batch."""

    def __init__(self, input_name: str, inputs: np.ndarray, batch_size: int = CALIBRATION_BATCH):
        self.batches = ({input_name: inputs[i:i + batch_size].astype(np.float32)}
                        for i in range(0, len(inputs), batch_size))

    def get_next(self):
        return next(self.batches, None)


def quantize_onnx_int8(float_model: Path, calibration: np.ndarray, out_path: Path) -> None:
    """Static int8 quantization of `float_model` into `out_path`, calibrated on `calibration`."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration is None or len(calibration) == 0:
        raise ValueError("int8 quantization needs calibration images")
    graph = onnx.load(str(float_model), load_external_data=False).graph
    input_name = graph.input[0].name
    outputs = {o.name for o in graph.output}
    keep_float = [n.name for n in graph.node if n.op_type in OUTPUT_ACTIVATIONS and set(n.output) & outputs]
    with tempfile.TemporaryDirectory(prefix="edgecxr-onnx-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Symbolic shape inference would need sympy; ONNX shape inference is enough for a CNN.
        quant_pre_process(str(float_model), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(out_path), ArrayReader(input_name, calibration),
            quant_format=QuantFormat.QDQ, per_channel=True,
            # 7-bit weight range: x86 CPUs without VNNI saturate int8 x int8 products otherwise
            # (measured on a 3-epoch real run: label agreement 79% -> 99%); the cost is one bit of
            # weight precision.
            reduce_range=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float,
        )


# The .ort file is optimised for ARM, the phones it is for. Its graph optimisations are fixed at
# conversion, so on x86 it runs ARM's choice of int8 kernels (QDQ fused as int8 x int8) where the
# .onnx loaded on x86 gets x86's (uint8 x int8): measured on Lite0 int8, up to 0.034 apart in
# probability on x86, and exactly equal once the .onnx is loaded with ARM's choice
# (`target_session_options`) or the .ort converted for amd64. Tests compare it that way.
ORT_TARGET_PLATFORM = "arm"


def target_session_options():
    """onnxruntime session options that make the .onnx's load-time optimisations those of the .ort's
    target platform, so the two can be compared on any host."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if ORT_TARGET_PLATFORM == "arm":
        options.add_session_config_entry("session.qdqisint8allowed", "1")
    return options
ORT_CONVERTER = f"onnxruntime.tools.convert_onnx_models_to_ort (fixed optimisations, target {ORT_TARGET_PLATFORM})"


def convert_to_ort(onnx_path: Path, target: Path) -> None:
    """ORT Mobile's flatbuffer format, made by onnxruntime's own converter from the .onnx file."""
    import contextlib
    import io
    import logging

    from edgecxr.edge_runtime.native_logs import runtime_logs_silenced

    # The tool prints its progress and logs through the root logger at INFO: both are kept off the
    # terminal (and the root logger is left as it was); they are shown only if it makes no file.
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    said = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="edgecxr-ort-") as folder:
        source = Path(folder) / "model.onnx"
        source.write_bytes(Path(onnx_path).read_bytes())
        try:
            with runtime_logs_silenced(), contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
                from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

                convert_onnx_models_to_ort(source, Path(folder), optimization_styles=[OptimizationStyle.Fixed],
                                           target_platform=ORT_TARGET_PLATFORM)
        finally:
            root.setLevel(level)
            root.handlers[:] = handlers
        made = Path(folder) / "model.ort"
        if not made.is_file():
            raise RuntimeError(f"onnxruntime's converter wrote no .ort file: {said.getvalue().strip()[-300:]}")
        target.write_bytes(made.read_bytes())
