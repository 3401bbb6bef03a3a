"""TFLite artifacts through the TensorFlow converter.

Quantization is configured in one function, `configure_tflite_quantization`: post-training
quantization inside the TFLite converter is deprecated upstream in favour of LiteRT's separate
quantizer, and swapping to it means replacing that function only.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.native_logs import runtime_logs_silenced

QUANTIZER = "tf.lite.TFLiteConverter post-training quantization"
# int8 weights are rounded per output channel to [-127, 127] steps of max|w| / 127 (bias correction
# compensates exactly this grid).
WEIGHT_STEPS = 127


def representative_dataset(inputs: np.ndarray):
    """One calibration image per step, as the converter's calibrator expects."""
    def generate():
        for image in inputs:
            yield [image[None].astype(np.float32)]
    return generate


def configure_tflite_quantization(converter, quantization: str, calibration: np.ndarray | None) -> None:
    import tensorflow as tf

    if quantization == "none":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        pass  # Optimize.DEFAULT without calibration data is dynamic-range quantization
    elif quantization == "int8":
        if calibration is None or len(calibration) == 0:
            raise ValueError("int8 quantization needs calibration images")
        converter.representative_dataset = representative_dataset(calibration)
        # Integer-only kernels with int8 input and output: what XNNPACK's int8 path and Pi
        # accelerators run; a float op left in the graph makes the conversion fail instead.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    else:
        raise ValueError(f"unknown TFLite quantization {quantization!r}")


def convert_tflite(saved_model_dir: Path, quantization: str, calibration: np.ndarray | None = None) -> bytes:
    """A .tflite flatbuffer from the exported SavedModel."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    configure_tflite_quantization(converter, quantization, calibration)
    with warnings.catch_warnings(), runtime_logs_silenced():
        # The upstream deprecation notice for converter quantization is documented in docs/convert.md;
        # the converter's C++ side prints its quantizer settings ("fully_quantize: 0, ...").
        warnings.simplefilter("ignore")
        return converter.convert()
