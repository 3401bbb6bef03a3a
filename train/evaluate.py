"""Evaluate any model (Keras, TFLite, ONNX) on a labelled folder at its stored threshold."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.batching import predict_in_batches
from edgecxr.edge_runtime.folders import LABELS, labelled_images
from edgecxr.edge_runtime.metrics import binary_metrics
from edgecxr.edge_runtime.preprocessing import scale_pixels
from edgecxr.edge_runtime.atomic import write_json_atomic
from edgecxr.edge_runtime.run_folder import EVALUATIONS_FILE, model_file

from . import plots
from .dataset import evaluation_folder
from .keras_backend import open_any_model
from .pixel_cache import PixelSet, load_pixels


def score_folder(backend, data: Path) -> tuple[Path, PixelSet, np.ndarray]:
    """The evaluation folder for `data`, its decoded labelled images, and the model's probabilities."""
    spec = backend.metadata.preprocessing
    folder = evaluation_folder(data)
    pixel_set = load_pixels(labelled_images(folder), spec, f"decoding {folder}")
    probabilities = predict_in_batches(backend.predict_proba, pixel_set.pixels,
                                       prepare=lambda batch: scale_pixels(batch.astype(np.float32), spec))
    return folder, pixel_set, probabilities


def evaluate(run_or_model: Path, data: Path, plots_dir: Path | None = None, trust: bool = False) -> dict:
    model_path = model_file(run_or_model)
    backend = open_any_model(model_path, trust=trust)
    folder, pixel_set, probabilities = score_folder(backend, data)
    threshold = backend.metadata.threshold
    result = binary_metrics(pixel_set.labels, probabilities, threshold)
    result.update({
        "model": str(model_path),
        "model_sha256": backend.metadata.sha256,
        "data": str(folder),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "skipped": [{"path": p, "reason": r} for p, r in pixel_set.skipped],
    })
    if Path(run_or_model).is_dir():  # a run folder: convert puts this in each artifact's model card
        record_evaluation(Path(run_or_model), result)
    if plots_dir is not None:
        name = folder.name
        plots.plot_confusion_matrix(result["confusion_matrix"], LABELS, Path(plots_dir) / f"confusion_matrix_{name}.png",
                                    f"{name} (threshold {threshold:.3f})")
        plots.plot_roc(pixel_set.labels, probabilities, threshold, Path(plots_dir) / f"roc_{name}.png", f"{name} ROC")
    return result


def record_evaluation(run: Path, result: dict) -> None:
    """Keep `result` in the run's evaluations.json under its folder's name (a rerun replaces it)."""
    path = run / EVALUATIONS_FILE
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        entries = {}
    if not isinstance(entries, dict):
        entries = {}
    kept = ("accuracy", "sensitivity", "specificity", "roc_auc", "threshold", "n_images", "confusion_matrix",
            "model_sha256", "data", "date")
    entries[result["data"]] = {key: result.get(key) for key in kept}
    write_json_atomic(path, entries)
