"""PNG plots people would rather see than read: training curves, confusion matrix, ROC."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: clinics' build boxes and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from edgecxr.edge_runtime.atomic import atomic_path  # noqa: E402
from edgecxr.edge_runtime.metrics import roc_auc, roc_curve  # noqa: E402


def save_png(figure, path: Path) -> Path:
    """Write `figure` as a PNG atomically and free it: every plot of the project is saved here."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(figure)
    return path


def plot_history(history: dict, path: Path) -> Path:
    """Loss and the other metrics per epoch, training against validation."""
    names = [k for k in history if not k.startswith("val_") and k != "learning_rate"]
    figure, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    for axis, name in zip(axes[0], names):
        epochs = np.arange(1, len(history[name]) + 1)
        axis.plot(epochs, history[name], label="train")
        if f"val_{name}" in history:
            axis.plot(epochs, history[f"val_{name}"], label="validation")
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    return save_png(figure, path)


def plot_confusion_matrix(matrix, labels, path: Path, title: str) -> Path:
    matrix = np.asarray(matrix)
    figure, axis = plt.subplots(figsize=(4.2, 3.8))
    axis.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        color = "white" if value > matrix.max() / 2 else "black"
        axis.text(col, row, str(value), ha="center", va="center", color=color, fontsize=13)
    axis.set_xticks(range(len(labels)), labels)
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    figure.tight_layout()
    return save_png(figure, path)


def plot_roc(y_true, probabilities, threshold: float, path: Path, title: str) -> Path:
    fpr, tpr, thresholds = roc_curve(y_true, probabilities)
    figure, axis = plt.subplots(figsize=(4.2, 4.0))
    axis.plot(fpr, tpr, label=f"AUC {roc_auc(y_true, probabilities):.3f}")
    axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    y = np.asarray(y_true, dtype=bool)
    p = np.asarray(probabilities)
    point = (np.mean(p[~y] >= threshold), np.mean(p[y] >= threshold))
    axis.plot(*point, "o", color="crimson", label=f"threshold {threshold:.3f}")
    axis.set_xlabel("1 - specificity")
    axis.set_ylabel("sensitivity")
    axis.set_title(title)
    axis.legend(loc="lower right")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return save_png(figure, path)
