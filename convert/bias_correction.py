"""Bias correction: int8 artifacts whose outputs are, on average, those of their Keras model.

Why: int8 rounding is not zero-mean once it has passed through a deep net. EfficientNet-Lite0's
int8 logit sits about 0.1 below its Keras model's on average, so images just above the decision
threshold flip to NORMAL. Two corrections, both applied to a copy of the Keras model that is then
quantized (the Keras model itself never changes; verification stays against it):

- `logit`: the mean logit gap, measured in the artifact's own runtime on the calibration images,
  is taken out of the final layer's bias.
- `layers`: first, every convolution's rounded weights are compensated per output channel: with
  int8 weights W + dW the output moves by conv(E[x], dW) on average (Nagel et al. 2019, "Data-free
  quantization through weight equalization and bias correction"), and that shift is taken out of
  the BatchNorm that folds into the convolution. Then the logit correction as above.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecxr.edge_runtime.batching import batch_size_for, memory_budget_bytes
from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.metrics import log_odds

MODES = ("off", "logit", "layers")

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


def logit_gap(reference_probs, artifact_probs) -> LogitGap:
    reference = np.asarray(reference_probs, dtype=np.float64).reshape(-1)
    artifact = np.asarray(artifact_probs, dtype=np.float64).reshape(-1)
    low, high = UNSATURATED
    usable = (reference > low) & (reference < high) & (artifact > low) & (artifact < high)
    count = int(usable.sum())
    if count < MIN_IMAGES:
        return LogitGap(None, count)
    return LogitGap(float(np.mean(log_odds(artifact[usable]) - log_odds(reference[usable]))), count)


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


def rounded_per_channel(kernel: np.ndarray, channels: int, levels: int) -> np.ndarray:
    """`kernel` on a symmetric per-output-channel grid of +-`levels` steps (the last axis is the channel)."""
    flat = kernel.reshape(-1, channels)
    step = np.maximum(np.abs(flat).max(axis=0), 1e-12) / levels
    return (np.clip(np.round(flat / step), -levels, levels) * step).reshape(kernel.shape)


def convolution_input_means(model, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Convolution name -> its input averaged over `inputs` (per position and channel), for every
    convolution whose BatchNorm folds into it."""
    import keras

    from edgecxr.train.batchnorm_folding import folded_pairs

    names = list(folded_pairs(model))
    if not names:
        return {}
    probe = keras.Model(model.input, [model.get_layer(n).input for n in names])
    sums = [0.0] * len(names)
    # The probe returns every convolution's input at once: the budget is shared among them.
    batch_size = batch_size_for(inputs.shape[1:], memory_budget_bytes() // 4)
    for start in range(0, len(inputs), batch_size):
        outputs = probe.predict_on_batch(inputs[start:start + batch_size])
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        sums = [total + np.asarray(out, dtype=np.float64).sum(axis=0) for total, out in zip(sums, outputs)]
    return {name: total / len(inputs) for name, total in zip(names, sums)}


def layer_corrected_copy(model, input_means: dict[str, np.ndarray], levels: int):
    """A copy of `model` whose BatchNorm betas absorb each folded convolution's mean weight-rounding
    shift (BatchNorms without a beta are left as they are)."""
    import keras
    import tensorflow as tf

    from edgecxr.train.batchnorm_folding import folded_kernel_and_bias, folded_pairs

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for conv_name, bn in folded_pairs(model).items():
        if not bn.center:
            continue
        conv = model.get_layer(conv_name)
        kernel = np.asarray(folded_kernel_and_bias(conv, bn)[0], dtype=np.float64)
        depthwise = type(conv).__name__ == "DepthwiseConv2D"
        channels = kernel.shape[2] * kernel.shape[3] if depthwise else kernel.shape[3]
        grid = kernel.reshape(*kernel.shape[:2], channels) if depthwise else kernel
        error = tf.constant(rounded_per_channel(grid, channels, levels).reshape(kernel.shape) - kernel)
        mean_input = tf.constant(input_means[conv_name][None])
        strides, padding = (1, *conv.strides, 1), conv.padding.upper()
        moved = (tf.nn.depthwise_conv2d(mean_input, error, strides, padding) if depthwise
                 else tf.nn.conv2d(mean_input, error, strides, padding))
        # The bias is one number per channel; the shift varies a little near padded borders.
        shift = np.asarray(tf.reduce_mean(moved, axis=(0, 1, 2)))
        target = copy.get_layer(bn.name)
        target.beta.assign((np.asarray(target.beta, dtype=np.float64) - shift).astype(np.float32))
    return copy
