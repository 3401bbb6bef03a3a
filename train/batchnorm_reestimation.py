"""Re-estimate a Keras model's BatchNorm moving statistics on a new site's images (no labels).

A clinic's films differ from the training films in exposure and processing; the BatchNorm layers
then normalise with statistics of the wrong population. Replacing the moving mean and variance by
those of the site's images (AdaBN) adapts the model without a single label; weights, gammas and
betas stay as trained.

How: every BatchNorm layer is put in training mode (batch statistics) with momentum 0, the images
go through in seeded shuffled batches, and each layer's batch mean and (biased) variance are read
back after every batch and pooled into the population's mean and variance (E[x^2] - E[x]^2 over
all images, not a running average that forgets early batches). Upstream layers normalise each
batch with that batch's own statistics while this happens; with batches of dozens of mixed films
those are close to the population's, and the whole set in one batch (exact) would not fit in
memory for EfficientNet-Lite0. Keras 3 runs a BatchNorm with `trainable=False` in inference mode
even when called with training=True, so the layers are made trainable for the pass and restored.
The only other layers that act differently in training mode are the Dropout layers after the
last BatchNorm, in the head: they cannot change any statistic gathered here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_BATCH_SIZE = 32


class NoBatchNorm(ValueError):
    pass


@dataclass(frozen=True)
class Renormalisation:
    layers: int
    images: int
    batch_size: int
    seed: int
    # How far the statistics moved, in units of the old standard deviation, averaged over channels:
    # the first layer's and the largest of any layer (0: the site looks like the training data).
    first_layer_mean_shift: float
    largest_mean_shift: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def batchnorm_layers(model) -> list:
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif hasattr(layer, "layers"):  # a nested model
            found.extend(batchnorm_layers(layer))
    return found


def renormalise(model, inputs: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0) -> Renormalisation:
    """Replace every BatchNorm layer's moving statistics in `model` (in place) by those of `inputs`,
    model-ready float32 (N, H, W, C) images. Raises NoBatchNorm if the model has none."""
    layers = batchnorm_layers(model)
    if not layers:
        raise NoBatchNorm(f"model {model.name!r} has no BatchNormalization layer to re-estimate")
    if len(inputs) < 2:
        raise ValueError("re-estimating BatchNorm statistics needs at least 2 images")
    order = np.random.default_rng(seed).permutation(len(inputs))
    # Near-equal batches: a last batch of one or two images would be normalised by its own
    # near-zero variance and send nonsense downstream.
    batches = np.array_split(order, max(1, len(inputs) // batch_size))
    old = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]
    sums = [np.zeros_like(mean, dtype=np.float64) for mean, _ in old]
    squares = [np.zeros_like(mean, dtype=np.float64) for mean, _ in old]
    saved = [(layer.trainable, layer.momentum) for layer in layers]
    try:
        for layer in layers:
            layer.trainable = True
            layer.momentum = 0.0  # moving statistics := this batch's, read back below
        for batch in batches:
            model(inputs[np.sort(batch)], training=True)
            for i, layer in enumerate(layers):
                mean = layer.moving_mean.numpy().astype(np.float64)
                variance = layer.moving_variance.numpy().astype(np.float64)
                sums[i] += len(batch) * mean
                squares[i] += len(batch) * (variance + mean ** 2)
    except BaseException:
        for layer, (mean, variance) in zip(layers, old):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        raise
    finally:
        for layer, (trainable, momentum) in zip(layers, saved):
            layer.trainable = trainable
            layer.momentum = momentum
    shifts = []
    for layer, (old_mean, old_variance), total, square in zip(layers, old, sums, squares):
        mean = total / len(inputs)
        variance = np.maximum(square / len(inputs) - mean ** 2, 0.0)
        layer.moving_mean.assign(mean.astype(old_mean.dtype))
        layer.moving_variance.assign(variance.astype(old_variance.dtype))
        shifts.append(float(np.mean(np.abs(mean - old_mean) / np.sqrt(old_variance + layer.epsilon))))
    return Renormalisation(len(layers), int(len(inputs)), batch_size, seed, round(shifts[0], 4),
                           round(max(shifts), 4))
