"""A new run folder from a trained transfer run, fine-tuned quantization-aware (quantization_aware.py).

    python -m edgecxr.train.quantization_aware_run runs/lite0-ft224-ls --out runs/lite0-qat

The new run keeps the source run's split, preprocessing and threshold rule; its threshold is
picked again on the same validation split because the weights changed. test/ is never read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from edgecxr.edge_runtime.console import console  # noqa: E402
from edgecxr.edge_runtime.errors import EdgecxrError  # noqa: E402


def quantization_aware_run(source: Path, out: Path, config, overwrite: bool = False) -> Path:
    import keras

    from edgecxr.convert.calibration import calibration_set
    from edgecxr.convert.run_folder import RunFolder
    from edgecxr.edge_runtime.atomic import atomic_path, write_json_atomic
    from edgecxr.edge_runtime.folders import LABELS
    from edgecxr.edge_runtime.metadata import write_metadata
    from edgecxr.edge_runtime.metrics import binary_metrics, pick_threshold

    from . import plots
    from .augment import AugmentConfig
    from .pixel_cache import load_pixels
    from .quantization_aware import (Int8Runner, calibrate_ranges, fit_consistent, int8_tflite,
                                     paired_activations)
    from .fitting import image_weights
    from .trainer import MODEL_FILE, predict_pixels, prepare_run_folder, publish_run_folder
    from .transfer_training import find_cut

    run = RunFolder.open(source)
    metadata = run.metadata
    transfer = metadata.details.get("transfer")
    if not transfer or transfer.get("strategy") != "fine-tune":
        raise EdgecxrError(f"{source} is not a fine-tuned transfer run; quantization-aware tuning needs its cut")
    training = metadata.details["training"]["config"]
    spec = metadata.preprocessing
    staging = prepare_run_folder(out, overwrite)
    try:
        keras.utils.set_random_seed(training["seed"])
        model = keras.models.load_model(run.model_path, compile=False)
        cut = find_cut(model, "fine-tune", transfer["cut_layer"])
        train_set = load_pixels(run.split("train"), spec, "decoding train split")
        val_set = load_pixels(run.split("validation"), spec, "decoding validation split")
        calibration = calibration_set(run, config.calibration_size, config.calibration_seed).inputs

        started = time.perf_counter()
        runner = Int8Runner(int8_tflite(cut.bottom, calibration))
        ranges = calibrate_ranges(cut.top, np.asarray(cut.bottom.predict(calibration, batch_size=64, verbose=0)))
        augment = AugmentConfig(**training["augment"])
        passes = [paired_activations(cut.bottom, runner, train_set.pixels, spec, augment if augment.enabled else None,
                                     (training["seed"], 100 + p), f"float and int8 bottom, pass {p + 1}")
                  for p in range(config.augment_passes)]
        validation = (paired_activations(cut.bottom, runner, val_set.pixels, spec,
                                         description="float and int8 bottom, validation"), val_set.labels)
        # As the source run was weighted: tuning must not change which class errors cost more.
        weights = image_weights(train_set.labels, training.get("class_weights", True))
        history = fit_consistent(cut.top, ranges, passes, train_set.labels, weights, validation, config,
                                 training["label_smoothing"], training["seed"])
        seconds = time.perf_counter() - started

        val_probs = predict_pixels(model, val_set.pixels, spec)
        threshold = pick_threshold(val_set.labels, val_probs, training["target_sensitivity"])
        val_metrics = binary_metrics(val_set.labels, val_probs, threshold)
        model_path = staging / MODEL_FILE
        with atomic_path(model_path) as tmp:
            model.save(tmp)
        details = dict(metadata.details)
        details["quantization_aware"] = {"source_run": str(source), **asdict(config), "seconds": round(seconds, 1),
                                         "cut_layer": cut.layer, "history": history}
        write_metadata(model_path, replace(metadata, threshold=threshold, details=details))
        write_json_atomic(staging / "metrics.json", {"validation": val_metrics, "n_val": int(len(val_set.labels)),
                                                      "quantization_aware_seconds": round(seconds, 1)})
        write_json_atomic(staging / "history.json", history)
        shutil.copy2(run.path / "split.json", staging / "split.json")
        plots.plot_confusion_matrix(val_metrics["confusion_matrix"], LABELS, staging / "confusion_matrix_val.png",
                                    f"validation (threshold {threshold:.3f})")
        plots.plot_roc(val_set.labels, val_probs, threshold, staging / "roc_val.png", "validation ROC")
        publish_run_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    console.print(f"[green]quantization-aware[/green] {seconds:.0f}s; validation accuracy {val_metrics['accuracy']:.3f}, "
                  f"AUC {val_metrics['roc_auc']:.3f}, sensitivity {val_metrics['sensitivity']:.3f}, specificity "
                  f"{val_metrics['specificity']:.3f} at threshold {threshold:.3f} -> {out}", highlight=False)
    return out


def main(argv: list[str] | None = None) -> int:
    from .quantization_aware import QatConfig

    defaults = QatConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--consistency", type=float, default=defaults.consistency)
    parser.add_argument("--augment-passes", type=int, default=defaults.augment_passes)
    parser.add_argument("--calibration-size", type=int, default=defaults.calibration_size)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    config = QatConfig(epochs=args.epochs, learning_rate=args.learning_rate, consistency=args.consistency,
                       augment_passes=args.augment_passes, calibration_size=args.calibration_size)
    try:
        quantization_aware_run(args.run, args.out, config, args.overwrite)
    except EdgecxrError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
