"""What the edge runtime needs to draw a class-activation heat map: the classifier head after the
pooling layer, as plain numbers in the metadata.

The graph already exports the pooled features and the feature map they average
(keras_graph.with_features). With the head's weights, the runtime computes the gradient of the
logit with respect to the pooled features at each image in numpy (TF-free): for a linear head that
is the head's weight vector itself (CAM, Zhou et al. 2016); for a Dense-ReLU head it is the weights
gated by which hidden units that image switches on (Grad-CAM's channel weights, Selvaraju et al.
2017, exact here because pooling is linear). Only Dense layers (linear, ReLU, or the final sigmoid)
and Dropout (an identity at inference) are supported; any other head gets no entry, and the
runtime falls back to occlusion.
"""

from __future__ import annotations

import numpy as np

from .keras_graph import feature_layer

ACTIVATIONS = ("linear", "relu", "sigmoid")
SIGNIFICANT_DIGITS = 7  # float32 weights need no more


def head_layers(model) -> list | None:
    """The layers from the pooling layer's output to the model's output, or None if not a plain chain."""
    pool = feature_layer(model)
    if pool is None:
        return None
    layers, tensor = [], pool.output
    by_input = {}
    for layer in model.layers:
        for node_input in _inputs_of(layer):
            by_input.setdefault(id(node_input), []).append(layer)
    while tensor is not model.output:
        consumers = by_input.get(id(tensor), [])
        if len(consumers) != 1:
            return None
        layer = consumers[0]
        layers.append(layer)
        tensor = layer.output
    return layers


def _inputs_of(layer) -> list:
    value = getattr(layer, "input", None)
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def describe_head(model) -> dict | None:
    """{"method": "grad-cam" | "cam", "dense": [...]} for the metadata, or None when unsupported."""
    layers = head_layers(model)
    if not layers:
        return None
    dense = []
    for layer in layers:
        kind = type(layer).__name__
        if kind == "Dropout":
            continue
        if kind != "Dense":
            return None
        activation = getattr(layer.activation, "__name__", str(layer.activation))
        if activation not in ACTIVATIONS:
            return None
        kernel, *bias = layer.get_weights()
        bias = bias[0] if bias else np.zeros(kernel.shape[1], dtype=np.float32)
        dense.append({"kernel": _rounded(kernel), "bias": _rounded(bias), "activation": activation})
    if not dense or len(np.asarray(dense[-1]["bias"])) != 1 or any(d["activation"] == "sigmoid" for d in dense[:-1]):
        return None
    linear = all(d["activation"] == "linear" for d in dense[:-1])
    return {"method": "cam" if linear else "grad-cam", "dense": dense}


def _rounded(values) -> list:
    array = np.asarray(values, dtype=np.float64)
    return np.vectorize(lambda v: float(f"{v:.{SIGNIFICANT_DIGITS}g}"))(array).tolist() if array.size else array.tolist()
