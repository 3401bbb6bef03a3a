"""How closely an exported artifact reproduces the Keras model on one labelled image set.

Shared by `edgecxr convert` (verification) and `edgecxr bench` (fidelity on test/).
"""

from __future__ import annotations

import numpy as np


def compare(reference_probs, artifact_probs, labels, threshold: float, band: float = 0.0) -> dict:
    """Label agreement at `threshold`, probability differences, and the accuracy of each model.

    `labels` may be None when the images are unlabelled; accuracies are then omitted. `band` also
    gives the agreement on the images whose reference probability is further than `band` from the
    threshold (`agreement_away`; 1.0 when no image is), the one verification holds to.
    """
    reference = np.asarray(reference_probs, dtype=np.float64).reshape(-1)
    artifact = np.asarray(artifact_probs, dtype=np.float64).reshape(-1)
    if reference.shape != artifact.shape or reference.size == 0:
        raise ValueError(f"need two equally long, non-empty probability arrays, got {reference.shape} and "
                         f"{artifact.shape}")
    reference_pred = reference >= threshold
    artifact_pred = artifact >= threshold
    difference = np.abs(reference - artifact)
    finite = np.isfinite(artifact)
    away = np.abs(reference - threshold) > band
    result = {
        "n_images": int(reference.size),
        "threshold": float(threshold),
        "agreement": float(np.mean(reference_pred == artifact_pred)),
        "disagreements": int(np.sum(reference_pred != artifact_pred)),
        "max_abs_diff": float(np.max(difference)) if finite.all() else float("inf"),
        "mean_abs_diff": float(np.mean(difference)) if finite.all() else float("inf"),
        "band": float(band),
        "near_threshold": int(np.sum(~away)),
        "agreement_away": float(np.mean(reference_pred[away] == artifact_pred[away])) if away.any() else 1.0,
        "reference_positive_rate": float(np.mean(reference_pred)),
        "artifact_positive_rate": float(np.mean(artifact_pred)),
    }
    if labels is not None:
        truth = np.asarray(labels).reshape(-1).astype(bool)
        if truth.shape != reference.shape:
            raise ValueError("labels and probabilities differ in length")
        result["reference_accuracy"] = float(np.mean(reference_pred == truth))
        result["artifact_accuracy"] = float(np.mean(artifact_pred == truth))
        result["accuracy_delta"] = result["artifact_accuracy"] - result["reference_accuracy"]
    return result
