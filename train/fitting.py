"""What every training phase shares: loss, optimizer schedule, metrics and callbacks."""

from __future__ import annotations

import numpy as np

from .progress import RichProgress


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Inverse-frequency weights: the 1:3 NORMAL:PNEUMONIA imbalance otherwise biases the net."""
    counts = np.bincount(labels, minlength=2)
    return {c: float(labels.size / (2 * counts[c])) for c in range(2) if counts[c]}


def image_weights(labels: np.ndarray, balanced: bool, counted: np.ndarray | None = None) -> np.ndarray:
    """Each image's class weight (all ones unless `balanced`), for `fit` as sample weights; the
    classes are counted in `counted` (default: `labels`), all of train/ for a worker's shard."""
    if not balanced:
        return np.ones(len(labels), dtype=np.float32)
    weight_of = class_weights(labels if counted is None else counted)
    return np.asarray([weight_of.get(int(c), 1.0) for c in labels], dtype=np.float32)


def batches_per_epoch(n: int, batch_size: int) -> int:
    return int(np.ceil(n / batch_size))


def compile_classifier(model, learning_rate: float, total_steps: int, label_smoothing: float) -> None:
    """Adam with cosine decay over the phase's whole budget, smoothed binary cross-entropy.

    With only a few epochs, the last ones at a small rate settle BatchNorm and the weights, where a
    constant rate kept bouncing around the best validation loss.
    """
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(1, total_steps), alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
    )


def first_selectable_epoch(epochs: int) -> int:
    """0-based index of the first epoch whose weights a phase of `epochs` may keep or stop after.

    The cosine schedule starts at its highest rate, where validation loss still jumps while the
    weights and BatchNorm statistics move fast. With patience alone, one lucky first epoch and three
    jumps ended a run on its first-epoch weights (validation AUC 0.964; 0.998 when it trained on).
    """
    return epochs // 2


def best_epoch_index(val_losses: list[float], epochs: int) -> int:
    """0-based index of the epoch whose weights early stopping keeps in a phase of `epochs`."""
    start = min(first_selectable_epoch(epochs), len(val_losses) - 1)
    return start + int(np.argmin(val_losses[start:]))


def fit_callbacks(epochs: int, steps: int, patience: int) -> list:
    """Early stopping on validation loss (best weights restored) and the rich progress display."""
    import keras

    return [
        keras.callbacks.EarlyStopping("val_loss", patience=patience, restore_best_weights=True,
                                      start_from_epoch=first_selectable_epoch(epochs)),
        RichProgress(epochs, steps),
    ]
