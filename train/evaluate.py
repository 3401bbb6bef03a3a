"""Evaluate any model (Keras, TFLite, ONNX) on a labelled folder at its stored threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.folders import LABELS, labelled_images
from edgecxr.edge_runtime.metrics import binary_metrics
from edgecxr.edge_runtime.preprocessing import scale_pixels

from . import plots
from .dataset import evaluation_folder
from .keras_backend import open_any_model, predict_proba_batched
from .pixel_cache import PixelSet, load_pixels


def resolve_model_path(run_or_model: Path) -> Path:
    """A run folder means its model.keras; a file is taken as it is."""
    path = Path(run_or_model)
    if path.is_dir():
        candidate = path / "model.keras"
        if not candidate.is_file():
            raise EdgecxrError(f"{path} is not a run folder (no model.keras inside)")
        return candidate
    if not path.is_file():
        raise EdgecxrError(f"model or run folder not found: {path}")
    return path


def score_folder(backend, data: Path) -> tuple[Path, PixelSet, np.ndarray]:
    """The evaluation folder for `data`, its decoded labelled images, and the model's probabilities."""
    spec = backend.metadata.preprocessing
    folder = evaluation_folder(data)
    pixel_set = load_pixels(labelled_images(folder), spec, f"decoding {folder}")
    probabilities = predict_proba_batched(backend, scale_pixels(pixel_set.pixels.astype(np.float32), spec))
    return folder, pixel_set, probabilities


def evaluate(run_or_model: Path, data: Path, plots_dir: Path | None = None, trust: bool = False) -> dict:
    model_path = resolve_model_path(run_or_model)
    backend = open_any_model(model_path, trust=trust)
    folder, pixel_set, probabilities = score_folder(backend, data)
    threshold = backend.metadata.threshold
    result = binary_metrics(pixel_set.labels, probabilities, threshold)
    result.update({
        "model": str(model_path),
        "data": str(folder),
        "skipped": [{"path": p, "reason": r} for p, r in pixel_set.skipped],
    })
    if plots_dir is not None:
        name = folder.name
        plots.plot_confusion_matrix(result["confusion_matrix"], LABELS, Path(plots_dir) / f"confusion_matrix_{name}.png",
                                    f"{name} (threshold {threshold:.3f})")
        plots.plot_roc(pixel_set.labels, probabilities, threshold, Path(plots_dir) / f"roc_{name}.png", f"{name} ROC")
    return result
