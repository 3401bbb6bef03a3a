"""Binary classification metrics in plain numpy (PNEUMONIA is the positive class)."""

from __future__ import annotations

import numpy as np

# NumPy 1 (what tflite-runtime on a Pi needs) has only np.trapz; NumPy 2 has only np.trapezoid.
_trapezoid = getattr(np, "trapezoid", None) or np.trapz

# An int8 output of exactly 0 or 1 would have an infinite log-odds; 1e-6 is far below one int8 step.
PROBABILITY_CLIP = 1e-6


def log_odds(probabilities) -> np.ndarray:
    """log(p / (1 - p)) of a flat float64 copy, probabilities clipped away from 0 and 1."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64).reshape(-1), PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    return np.log(p / (1 - p))


def confusion_matrix(y_true, y_pred) -> list[list[int]]:
    """[[tn, fp], [fn, tp]]."""
    y_true = np.asarray(y_true, dtype=bool)
    y_pred = np.asarray(y_pred, dtype=bool)
    tn = int(np.sum(~y_true & ~y_pred))
    fp = int(np.sum(~y_true & y_pred))
    fn = int(np.sum(y_true & ~y_pred))
    tp = int(np.sum(y_true & y_pred))
    return [[tn, fp], [fn, tp]]


def roc_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rates, true-positive rates and the thresholds that produce them."""
    y_true = np.asarray(y_true, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    scores, y_true = scores[order], y_true[order]
    distinct = np.r_[np.where(np.diff(scores))[0], y_true.size - 1]
    tps = np.cumsum(y_true)[distinct]
    fps = (distinct + 1) - tps
    positives, negatives = max(int(y_true.sum()), 1), max(int((~y_true).sum()), 1)
    tpr = np.r_[0.0, tps / positives]
    fpr = np.r_[0.0, fps / negatives]
    thresholds = np.r_[np.inf, scores[distinct]]
    return fpr, tpr, thresholds


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve (ties count one half), NaN when only one class is present."""
    y_true = np.asarray(y_true, dtype=bool)
    if y_true.all() or not y_true.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(y_true, scores)
    return float(_trapezoid(tpr, fpr))


def binary_metrics(y_true, probabilities, threshold: float) -> dict:
    """Everything a clinician asks about a screening test, at one operating threshold."""
    y_true = np.asarray(y_true, dtype=bool)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_pred = probabilities >= threshold
    (tn, fp), (fn, tp) = confusion_matrix(y_true, y_pred)
    n = tn + fp + fn + tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    sensitivity = tp / (tp + fn) if tp + fn else float("nan")
    specificity = tn / (tn + fp) if tn + fp else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {
        "accuracy": (tp + tn) / n if n else float("nan"),
        "precision": precision,
        "sensitivity": sensitivity,
        "recall": sensitivity,
        "specificity": specificity,
        "f1": f1,
        "roc_auc": roc_auc(y_true, probabilities),
        "threshold": float(threshold),
        "n_images": int(n),
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }


def pick_threshold(y_true, probabilities, target_sensitivity: float = 0.95) -> float:
    """Highest threshold whose sensitivity on these labels is at least `target_sensitivity`.

    The threshold is placed halfway between the last positive that must be caught and the next
    lower score, so tiny numeric differences (e.g. after int8 quantization) do not flip it.
    """
    if not 0.0 < target_sensitivity <= 1.0:
        raise ValueError("target sensitivity must be in (0, 1]")
    y_true = np.asarray(y_true, dtype=bool)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    positives = np.sort(probabilities[y_true])[::-1]
    if positives.size == 0:
        raise ValueError("cannot pick a threshold without positive examples")
    needed = int(np.ceil(target_sensitivity * positives.size - 1e-9))
    cutoff = positives[needed - 1]
    lower = probabilities[probabilities < cutoff]
    if lower.size == 0:
        return float(cutoff)
    return float((cutoff + lower.max()) / 2.0)
