"""Logit bias correction: int8 artifacts that are, on average, as confident as their Keras model.

Why: int8 rounding is not zero-mean once it has passed through a deep net. EfficientNet-Lite0's
int8 logit sits about 0.1 below its Keras model's on average, so images just above the decision
threshold flip to NORMAL. That systematic part is one number per artifact: measured in the
artifact's own runtime on the calibration images, it is taken out of the final layer's bias of a
copy of the Keras model, and that copy is quantized again. What remains is rounding noise.

The Keras model itself is never changed: verification and every comparison stay against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecxr.edge_runtime.errors import EdgecxrError

# An int8 sigmoid output moves in steps of 1/256, so probabilities near 0 or 1 say little about
# the logit behind them; only images both models put inside this band are measured.
UNSATURATED = (0.01, 0.99)
# Fewer unsaturated calibration images than this and the mean gap is too noisy to act on.
MIN_IMAGES = 20


@dataclass(frozen=True)
class LogitGap:
    """Mean int8-minus-Keras logit over the unsaturated calibration images (None: too few)."""

    mean: float | None
    n_images: int

    def describe(self) -> dict:
        if self.mean is None:
            return {"applied": False, "unsaturated_calibration_images": self.n_images,
                    "why": f"fewer than {MIN_IMAGES} calibration images with probabilities inside {UNSATURATED}"}
        return {"applied": True, "logit_shift": round(-self.mean, 6),
                "unsaturated_calibration_images": self.n_images}


def logits(probs) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def logit_gap(reference_probs, artifact_probs) -> LogitGap:
    reference = np.asarray(reference_probs, dtype=np.float64).reshape(-1)
    artifact = np.asarray(artifact_probs, dtype=np.float64).reshape(-1)
    low, high = UNSATURATED
    usable = (reference > low) & (reference < high) & (artifact > low) & (artifact < high)
    count = int(usable.sum())
    if count < MIN_IMAGES:
        return LogitGap(None, count)
    return LogitGap(float(np.mean(logits(artifact[usable]) - logits(reference[usable]))), count)


def sigmoid_head(model):
    """The final Dense layer with one sigmoid unit, whose bias is the logit's offset."""
    head = model.layers[-1] if getattr(model, "layers", None) else None
    activation = getattr(getattr(head, "activation", None), "__name__", None)
    if (type(head).__name__ != "Dense" or activation != "sigmoid" or head.units != 1
            or not head.use_bias):
        raise EdgecxrError("bias correction needs a model ending in one Dense sigmoid unit with a bias "
                           "(what edgecxr train builds); convert with --no-bias-correction")
    return head


def logit_shifted_copy(model, shift: float):
    """A copy of `model` whose final logit is `shift` higher; `model` is left untouched."""
    import keras

    sigmoid_head(model)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    head = sigmoid_head(copy)
    head.bias.assign(np.asarray(head.bias) + np.float32(shift))
    return copy
