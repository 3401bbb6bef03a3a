"""Run a model over many inputs in batches sized by memory, not by a constant.

The one batched-inference loop: training's final scoring, evaluate, convert's calibration and
verification, and bench all go through `predict_in_batches`. A constant batch was the bug: 256
images of 224x224 through EfficientNet-Lite0 in one eager Keras call peaked at 21.2 GB and the
kernel killed the published training command at its last step.
"""

from __future__ import annotations

import math
import os
from typing import Callable

import numpy as np

from .errors import EdgecxrError

BUDGET_ENV = "EDGECXR_INFERENCE_MEMORY_MB"
DEFAULT_BUDGET_MB = 1024
MAX_BATCH = 256
# Working memory of one image, as a multiple of its float32 input's bytes, for a compiled Keras
# predict step (model.predict_on_batch; TF 2.21 on CPU, measured 2026-12-01): EfficientNet-Lite0 at
# 224x224x3 about 11.5 MB an image (19x its 0.6 MB input), the compact CNN at 64x64x1 0.6 MB (37x).
# Eager calls took 83 MB and 3 MB: callers hand in a compiled step (train/keras_backend.py).
# TFLite and onnxruntime need far less, so one factor, the larger, keeps every runtime in budget.
BYTES_PER_INPUT_BYTE = 40


def memory_budget_bytes() -> int:
    """The working-memory budget for one inference batch: $EDGECXR_INFERENCE_MEMORY_MB or 1 GiB."""
    value = os.environ.get(BUDGET_ENV)
    if value is None:
        return DEFAULT_BUDGET_MB << 20
    try:
        megabytes = float(value)
    except ValueError:
        raise EdgecxrError(f"${BUDGET_ENV} must be a number of megabytes, not {value!r}") from None
    if megabytes <= 0:
        raise EdgecxrError(f"${BUDGET_ENV} must be positive, not {value!r}")
    return int(megabytes * (1 << 20))


def batch_size_for(input_shape: tuple[int, ...], budget_bytes: int | None = None, max_batch: int = MAX_BATCH) -> int:
    """How many images of `input_shape` (one image, no batch axis) fit the budget, 1..max_batch."""
    budget = memory_budget_bytes() if budget_bytes is None else budget_bytes
    per_image = math.prod(int(d) for d in input_shape) * 4 * BYTES_PER_INPUT_BYTE
    return max(1, min(max_batch, budget // max(per_image, 1)))


def decode_workers() -> int:
    """One decoding thread per core this process may use (4 on a Raspberry Pi 4 or 5)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def decode_window(input_shape: tuple[int, ...], batch_size: int, workers: int,
                  budget_bytes: int | None = None) -> int:
    """How many images parallel decoding may have in flight besides the batch being filled.

    Two per worker keeps every worker busy while the interpreter runs; fewer if the decoded
    inputs would not fit the budget (never fewer than one per worker). Each worker also holds
    one full-size film while it decodes it, bounded by images.MAX_PIXELS.
    """
    budget = memory_budget_bytes() if budget_bytes is None else budget_bytes
    per_image = math.prod(int(d) for d in input_shape) * 4
    fits = budget // max(per_image, 1) - batch_size
    return max(workers, min(2 * workers, fits))


def predict_in_batches(predict: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray, *,
                       batch_size: int | None = None,
                       prepare: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """`predict` over `inputs` (N, ...) a batch at a time -> (N,) float64 positive-class scores.

    `prepare` turns a slice of `inputs` into model inputs (e.g. uint8 pixels -> scaled float32),
    so only one batch is ever held in its larger form. The batch size comes from the budget unless
    given.
    """
    if len(inputs) == 0:
        return np.zeros(0, dtype=np.float64)
    outputs = []
    for batch in _batches(inputs, batch_size, prepare):
        result = np.asarray(predict(batch), dtype=np.float64)
        outputs.append(result.reshape(len(batch), -1)[:, 0])
    return np.concatenate(outputs)


def predict_with_features_in_batches(predict: Callable[[np.ndarray], tuple], inputs: np.ndarray, *,
                                     batch_size: int | None = None,
                                     prepare: Callable[[np.ndarray], np.ndarray] | None = None
                                     ) -> tuple[np.ndarray, np.ndarray]:
    """As `predict_in_batches`, for a `predict` that returns (probabilities, features) per batch:
    -> (N,) float64 probabilities and (N, D) float64 features."""
    probabilities, features = [], []
    for batch in _batches(inputs, batch_size, prepare):
        probability, feature = predict(batch)
        probabilities.append(np.asarray(probability, dtype=np.float64).reshape(len(batch), -1)[:, 0])
        features.append(np.asarray(feature, dtype=np.float64).reshape(len(batch), -1))
    if not probabilities:
        raise EdgecxrError("no inputs to predict")
    return np.concatenate(probabilities), np.concatenate(features)


def _batches(inputs: np.ndarray, batch_size: int | None, prepare):
    size = batch_size or batch_size_for(tuple(inputs.shape[1:]))
    for start in range(0, len(inputs), size):
        batch = inputs[start:start + size]
        yield batch if prepare is None else prepare(batch)
