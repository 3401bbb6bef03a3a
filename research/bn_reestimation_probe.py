"""Why EfficientNet-Lite0's int8 rebuild after BatchNorm re-estimation fails verification, and what the
re-estimation does at Keras (float) level, on the commissioning benchmark's two patient halves of test/.

    python -m research.bn_reestimation_probe RUN [--data DATA] [--out research/results/bn_reestimation]

For each half: the run's Keras model is re-estimated on that half's images (train/batchnorm_reestimation.py,
as `edgecxr commission --renormalise` does, no labels), then the other half is scored in Keras at the
validated threshold, before and after. Also recorded per BatchNorm layer: the smallest ratio of new
to old moving variance and the largest |gamma| / sqrt(variance + eps) after re-estimation (the
per-channel gain the int8 converter folds into the convolution before it).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgecxr.benchmarks.measure.commissioning_halves import patient_halves
from edgecxr.benchmarks.machine import describe, machine_info
from edgecxr.convert.calibration import to_image_set
from edgecxr.edge_runtime.atomic import write_json_atomic
from edgecxr.edge_runtime.batching import predict_in_batches
from edgecxr.edge_runtime.data_location import resolve_data_dir
from edgecxr.edge_runtime.folders import labelled_images
from edgecxr.edge_runtime.metrics import binary_metrics
from edgecxr.edge_runtime.run_folder import RunFolder
from edgecxr.train.dataset import patient_id
from edgecxr.train.keras_backend import compiled_predict
from edgecxr.train.batchnorm_reestimation import batchnorm_layers, renormalise


def layer_facts(model) -> list[dict]:
    facts = []
    for layer in batchnorm_layers(model):
        variance = layer.moving_variance.numpy().astype(np.float64)
        gain = np.abs(layer.gamma.numpy()) / np.sqrt(variance + layer.epsilon)
        facts.append({"layer": layer.name, "min_variance": float(variance.min()), "max_gain": float(gain.max())})
    return facts


def main(argv=None) -> int:
    import keras

    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("research/results/bn_reestimation"))
    args = parser.parse_args(argv)
    run = RunFolder.open(args.run)
    spec, threshold = run.metadata.preprocessing, run.metadata.threshold
    images = labelled_images(resolve_data_dir(args.data) / "test")
    inputs = to_image_set(images, spec, "test/", "decoding test/").inputs
    truths = np.array([i.label == 1 for i in images])
    patients = np.array([f"{i.label}:{patient_id(i.path)}" for i in images])
    halves = patient_halves(patients, args.seed)  # the benchmark's halves (same seed)
    original = keras.models.load_model(run.model_path, compile=False)
    before_probs = predict_in_batches(compiled_predict(original), inputs)
    before_layers = layer_facts(original)
    results = []
    for half in (0, 1):
        model = keras.models.load_model(run.model_path, compile=False)
        stats = renormalise(model, inputs[halves == half], seed=42)
        probs = predict_in_batches(compiled_predict(model), inputs)
        other = halves != half
        after_layers = layer_facts(model)
        ratios = [{"layer": a["layer"], "min_variance_ratio": a["min_variance"] / max(b["min_variance"], 1e-12),
                   "max_gain_before": b["max_gain"], "max_gain_after": a["max_gain"]}
                  for a, b in zip(after_layers, before_layers)]
        results.append({"half": half, "re_estimation_images": int((halves == half).sum()),
                        "scored_images": int(other.sum()), "renormalisation": stats.to_dict(),
                        "keras_before": binary_metrics(truths[other], before_probs[other], threshold),
                        "keras_after": binary_metrics(truths[other], probs[other], threshold),
                        "largest_gains_after": sorted(ratios, key=lambda r: -r["max_gain_after"])[:5]})
        print(json.dumps({k: results[-1][k] for k in ("half", "keras_before", "keras_after")}), flush=True)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python -m research.bn_reestimation_probe " + " ".join(argv or sys.argv[1:]),
              "machine": describe(machine_info()), "run": str(args.run), "threshold": threshold, "halves": results}
    write_json_atomic(args.out / f"{run.metadata.arch}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
