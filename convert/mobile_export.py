"""The mobile artifact: an int8 TFLite graph that takes a uint8 RGB frame and returns class scores.

The graph is the run's own network behind `frame_graph.frame_to_input` (the preprocessing, exact),
with the probability dequantized and written as the scores [1 - p, p] in the order of the labels,
float32, batch 1: what MediaPipe Tasks' ImageClassifier and the Android ML binding accept. The
network is quantized as the plain int8 TFLite artifact is (same calibration films, same converter);
the two score ops after it are kept in float, so the positive score is the network's own 8-bit
probability, not requantized onto another grid.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.native_logs import runtime_logs_silenced
from edgecxr.edge_runtime.preprocessing import PreprocessSpec

from .frame_graph import frame_to_input
from .mobile_metadata import MobileDescription, with_metadata

QUANTIZER = "tf.lite.TFLiteConverter post-training quantization (score ops kept in float)"
# The frame a phone hands over; a model trained on smaller inputs resizes inside, as on the edge.
FRAME_SIDE = 224
FLOAT_OPS = ("SUB", "CONCATENATION")  # the [1 - p, p] after the network


def frame_size(spec: PreprocessSpec) -> tuple[int, int]:
    return max(FRAME_SIDE, spec.height), max(FRAME_SIDE, spec.width)


def mobile_function(model, spec: PreprocessSpec, positive_first: bool):
    import tensorflow as tf

    height, width = frame_size(spec)
    signature = [tf.TensorSpec([1, height, width, 3], tf.uint8, name="image")]

    @tf.function(input_signature=signature, autograph=False)
    def classify(frame):
        probability = model(frame_to_input(frame, spec, height, width), training=False)
        probability = tf.reshape(probability, [1, 1])
        pair = [probability, 1.0 - probability] if positive_first else [1.0 - probability, probability]
        return {"probability": tf.concat(pair, axis=-1)}

    return classify, signature


def convert_mobile(model, spec: PreprocessSpec, labels: list[str], positive_label: str, frames: np.ndarray,
                   described: MobileDescription, workdir: Path) -> bytes:
    """The .tflite bytes, metadata included. `frames`: uint8 (N, H, W, 3) calibration frames."""
    import keras
    import tensorflow as tf

    if positive_label not in labels or len(labels) != 2:
        raise ValueError(f"the mobile format needs two labels with the positive among them, not {labels}")
    classify, signature = mobile_function(model, spec, positive_first=labels.index(positive_label) == 0)
    folder = workdir / "mobile_saved_model"
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serve", fn=classify, input_signature=signature)
    archive.write_out(str(folder), verbose=False)

    def calibration():
        for frame in frames:
            yield [frame[None]]

    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = calibration
    # int8 kernels where they exist; the preprocessing is int32 and stays so.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    with warnings.catch_warnings(), runtime_logs_silenced():
        warnings.simplefilter("ignore")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=calibration,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(FLOAT_OPS)))
        converted = debugger.get_nondebug_quantized_model()
    return with_metadata(short_internal_names(converted), described)


def short_internal_names(model_bytes: bytes) -> bytes:
    """The model with every tensor but the graph's inputs and outputs named by its index.

    The converter names a fused tensor after every op folded into it (a few hundred bytes each for a
    Conv-BatchNorm-ReLU); nothing on a phone reads them, and in a 90 kB network they are 3 % of the
    file. Done before the metadata is attached: re-serialising drops the files appended after it.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    for graph in model.subgraphs:
        kept = {int(i) for i in graph.inputs} | {int(i) for i in graph.outputs}
        for index, tensor in enumerate(graph.tensors):
            if index not in kept:
                tensor.name = f"t{index}".encode()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def description(labels: list[str], positive_label: str, threshold: float, arch: str, frame: tuple[int, int]) -> MobileDescription:
    negative = next(label for label in labels if label != positive_label)
    return MobileDescription(
        name=f"edgecxr {arch} (int8, preprocessing in the graph)",
        description=(
            f"Pediatric frontal chest X-ray, {negative} vs {positive_label}: decision support, not a diagnosis. "
            f"Call {positive_label} when its score >= {threshold:.4f} (validated threshold), not by top category. "
            f"Refuses nothing: the app must reject what is not a chest X-ray (edgecxr docs/mobile.md)."),
        version="1",
        labels=tuple(labels),
        input_description=(f"{frame[0]}x{frame[1]} RGB frame of the whole film, 0..255 (gray: equal channels); "
                           f"preprocessed inside."),
        output_description=f"Score per label; {positive_label}'s is the model's probability.",
    )
