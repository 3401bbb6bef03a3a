"""Where does int8 drift come from? Re-quantize a run with some layers kept in float and compare.

Each variant is the run's Keras model quantized by the TFLite converter (same calibration images
as `edgecxr convert`), with the tensors whose names contain the given layer-name fragments left in
float (TFLite's quantization debugger deny list). Every variant is compared with the Keras model on the
run's whole validation split — never on test/ — so a fix can be chosen without looking at it.

    python -m research.int8_fidelity_probe runs/lite0-ft224-ls --calibration-size 1000 \\
        --float stem_ --float stem_,block0_

The variants with float layers are diagnostics, not artifacts: they are not full-integer models.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np


from edgecxr.edge_runtime.console import console


def quantized_probabilities(model_bytes: bytes, inputs: np.ndarray) -> np.ndarray:
    """Float-in, float-out interpreter run, one image at a time (as on the Pi)."""
    from edgecxr.edge_runtime.backends import tflite_interpreter_class

    interpreter_class, _ = tflite_interpreter_class()
    interpreter = interpreter_class(model_content=model_bytes, num_threads=2)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for image in inputs:
        interpreter.set_tensor(source["index"], image[None].astype(np.float32))
        interpreter.invoke()
        outputs.append(float(interpreter.get_tensor(target["index"]).ravel()[0]))
    return np.array(outputs)


def probe(run_path: Path, float_layers: list[str], calibration_size: int = 1000, seed: int = 42) -> list[dict]:
    """One row per variant: all int8 first, then one per comma-separated group of layer fragments."""
    import tensorflow as tf

    from edgecxr.convert.calibration import calibration_set
    from edgecxr.convert.fidelity import compare
    from edgecxr.edge_runtime.run_folder import RunFolder
    from edgecxr.convert.tflite_export import configure_tflite_quantization, representative_dataset
    from edgecxr.edge_runtime.preprocessing import scale_pixels
    from edgecxr.edge_runtime.batching import predict_in_batches
    from edgecxr.train.keras_backend import open_any_model
    from edgecxr.train.pixel_cache import load_pixels

    run = RunFolder.open(run_path)
    reference = open_any_model(run.model_path)
    spec, threshold = reference.metadata.preprocessing, reference.metadata.threshold
    validation = load_pixels(run.split("validation"), spec, "decoding validation")
    inputs = scale_pixels(validation.pixels.astype(np.float32), spec)
    reference_probs = predict_in_batches(reference.predict_proba, inputs)
    calibration = calibration_set(run, calibration_size, seed).inputs[:]

    converter = tf.lite.TFLiteConverter.from_keras_model(reference.model)
    configure_tflite_quantization(converter, "int8", calibration)  # exactly what `edgecxr convert` sets
    # Float input and output: variants with float layers must all take and give the same tensors.
    converter.inference_input_type = converter.inference_output_type = tf.float32
    debug_images = representative_dataset(calibration[:8])
    listing = io.StringIO()
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=debug_images)
    debugger.run()
    debugger.layer_statistics_dump(listing)
    listing.seek(0)
    tensors = [row["tensor_name"] for row in csv.DictReader(listing)]

    rows = []
    for fragments in ["", *float_layers]:
        chosen = tuple(f for f in fragments.split(",") if f)
        # Converted tensor names carry the Keras layer name inside a longer path.
        deny = [name for name in tensors if any(fragment in name for fragment in chosen)]
        options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=deny) if deny else None
        variant = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=debug_images,
                                                            debug_options=options)
        probs = quantized_probabilities(variant.get_nondebug_quantized_model(), inputs)
        rows.append({"variant": "all int8" if not chosen else "float " + "+".join(chosen),
                     "float_tensors": len(deny), **compare(reference_probs, probs, validation.labels, threshold)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--calibration-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--float", dest="float_layers", action="append", default=[],
                        help="comma-separated layer-name fragments (e.g. stem_,block0_) whose tensors stay "
                        "float; repeat for more variants")
    args = parser.parse_args(argv)
    for row in probe(args.run, args.float_layers, args.calibration_size, args.seed):
        console.print(
            f"{row['variant']} ({row['float_tensors']} float tensors): agreement {row['agreement']:.4f} "
            f"({row['disagreements']} of {row['n_images']}), mean |dp| {row['mean_abs_diff']:.4f}, "
            f"max |dp| {row['max_abs_diff']:.3f}", highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
