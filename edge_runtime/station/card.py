"""The model card the page shows at a click: what the model is for, how well it did and where.

Everything comes from the model's metadata, except the validated figures: an exported model's
metadata does not repeat them, so they are read from its run folder's metrics.json, and only if that
run's Keras model is the one the artifact was converted from (same sha256).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..intervals import clopper_pearson
from ..metadata import ModelMetadata, metadata_path
from ..run_folder import METRICS_FILE, MODEL_FILE
from ..versions import package_version

INTENDED_USE = ("Triage support for pediatric chest X-rays (NORMAL vs PNEUMONIA): it orders the worklist "
                "and flags films for a clinician's attention. It is not a diagnosis; every film is read "
                "by a clinician.")


def proportion(successes: int, n: int) -> dict:
    low, high = clopper_pearson(successes, n) if n else (None, None)
    return {"value": successes / n if n else None, "ci95": [low, high], "successes": successes, "n": n}


def figures_from_confusion(matrix, threshold: float) -> dict:
    (tn, fp), (fn, tp) = matrix
    return {"threshold": float(threshold), "accuracy": proportion(tn + tp, tn + fp + fn + tp),
            "sensitivity": proportion(tp, tp + fn), "specificity": proportion(tn, tn + fp)}


def validated_figures(model_path: Path, metadata: ModelMetadata) -> dict | None:
    """Validation accuracy, sensitivity and specificity with 95 % intervals, or None if unknown."""
    model_path = Path(model_path)
    # The run folder holds the model (a Keras model) or the folder it was exported to (export/ or another).
    candidates = [model_path.parent, model_path.parent.parent]
    source_sha = metadata.details.get("source_sha256") if isinstance(metadata.details, dict) else None
    for run in candidates:
        try:
            keras_sha = json.loads(metadata_path(run / MODEL_FILE).read_text(encoding="utf-8")).get("sha256")
            metrics = json.loads((run / METRICS_FILE).read_text(encoding="utf-8"))
            validation = metrics["validation"]
            matrix = validation["confusion_matrix"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if keras_sha and keras_sha in (source_sha, metadata.sha256):
            figures = figures_from_confusion(matrix, validation.get("threshold", metadata.threshold))
            figures["source"] = metrics.get("validation_source", "validation split")
            return figures
    return None


def model_card(model_path: Path, metadata: ModelMetadata, runtime: str, learned_check: str) -> dict:
    commissioning = metadata.commissioning
    commissioned = None
    if commissioning:
        commissioned = {key: commissioning.get(key) for key in ("site", "date", "threshold", "previous_threshold",
                                                                 "target_sensitivity")}
        commissioned["images"] = commissioning.get("images")
        commissioned["at_site_threshold"] = commissioning.get("at_site_threshold")
    return {
        "intended_use": INTENDED_USE,
        "model_file": Path(model_path).name,
        "sha256": metadata.sha256,
        "arch": metadata.arch,
        "format": metadata.format,
        "quantization": metadata.quantization,
        "runtime": runtime,
        "labels": list(metadata.labels),
        "positive_label": metadata.positive_label,
        "threshold": metadata.threshold,
        "threshold_rule": "highest threshold with validation sensitivity >= target (picked on validation only)",
        "validated": validated_figures(model_path, metadata),
        "commissioned": commissioned,
        "input_gate": {"cheap_checks": "on", "learned_check": learned_check},
        "edgecxr_version": package_version("edgecxr"),
        "exported_at": metadata.details.get("exported_at") if isinstance(metadata.details, dict) else None,
    }


def commissioning_text(metadata: ModelMetadata) -> str:
    record = metadata.commissioning
    if not record:
        return "none"
    return f"site {record.get('site')}, {str(record.get('date', ''))[:10]}"
