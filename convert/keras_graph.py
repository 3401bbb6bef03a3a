"""The Keras model as an inference-only TensorFlow graph, checked for the classic export traps.

Both converters start from the same graph traced with `training=False`: augmentation and dropout
layers are identities there, so no random op reaches an exported model. Besides the probability,
the graph outputs the model's penultimate features (its global-average-pooling output), which the
edge runtime's input gate and site monitor compare with the training images, and the feature map
that pooling averages (the last convolutional block's output), from which the edge runtime draws
the class-activation heat map of the same inference (edge_runtime/heatmap.py).
"""

from __future__ import annotations

from pathlib import Path

from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.preprocessing import PreprocessSpec

INPUT_NAME = "image"
# The graph's outputs. Runtimes tell them apart by shape (edge_runtime.backends.output_roles).
PROBABILITY_OUTPUT, FEATURE_OUTPUT, FEATURE_MAP_OUTPUT = "probability", "features", "feature_map"
# Layers that scale inputs; preprocessing already does that, and doing it twice is the classic
# cause of an int8 model that predicts one class for everything.
NORMALISING_LAYERS = ("Rescaling", "Normalization")


def all_layers(model) -> list:
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found.extend(all_layers(layer))
    return found


def check_single_normalisation(model, spec: PreprocessSpec) -> None:
    """Refuse a model that rescales its inputs when the preprocessing spec already does."""
    if spec.scale == 1.0 and spec.offset == 0.0:
        return
    scaling = [layer.name for layer in all_layers(model) if type(layer).__name__ in NORMALISING_LAYERS]
    if scaling:
        raise EdgecxrError(
            f"the model normalises its input itself (layer {', '.join(scaling)}) while its preprocessing "
            f"already scales pixels by {spec.scale:g} (+{spec.offset:g}): inputs would be normalised twice. "
            f"Remove the layer or retrain with normalisation in one place only"
        )


def feature_layer(model):
    """The last global-average-pooling layer (what the classifier head reads), or None."""
    pools = [layer for layer in all_layers(model) if type(layer).__name__ == "GlobalAveragePooling2D"]
    return pools[-1] if pools else None


def with_features(model):
    """`model` with two more outputs, its penultimate features and the feature map they pool;
    `model` itself when it has no pooling layer.

    The three-output model shares `model`'s layers and weights, so its probability is `model`'s.
    """
    import keras

    layer = feature_layer(model)
    if layer is None:
        return model
    return keras.Model(model.input, [model.output, layer.output, layer.input], name=f"{model.name}_with_features")


def serving_function(model, spec: PreprocessSpec):
    """A tf.function with a dynamic batch dimension that runs the model in inference mode and returns
    {"probability": (N, 1), "features": (N, D), "feature_map": (N, h, w, D)}, or the probability alone
    for a model without pooling."""
    import tensorflow as tf

    signature = [tf.TensorSpec([None, *spec.input_shape], tf.float32, name=INPUT_NAME)]
    served = with_features(model)

    @tf.function(input_signature=signature, autograph=False)
    def serve(image):
        if served is model:
            return model(image, training=False)
        probability, features, feature_map = served(image, training=False)
        return {PROBABILITY_OUTPUT: probability, FEATURE_OUTPUT: features, FEATURE_MAP_OUTPUT: feature_map}

    return serve, signature


def graph_op_types(concrete_function) -> set[str]:
    """Every op type in a traced function, including those inside nested function calls."""
    graph_def = concrete_function.graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types.update(node.op for node in function.node_def)
    return types


def check_no_random_ops(function) -> None:
    """`function`: a tf.function with an input signature, or a concrete function."""
    concrete = function.get_concrete_function() if hasattr(function, "get_concrete_function") else function
    random_ops = sorted(op for op in graph_op_types(concrete) if "Random" in op)
    if random_ops:
        raise EdgecxrError(
            f"the inference graph still contains random ops ({', '.join(random_ops)}): augmentation or noise "
            f"that stays active at inference must be removed from the model before export"
        )


def export_saved_model(model, spec: PreprocessSpec, folder: Path):
    """Check the traps, then write the SavedModel the TFLite converter starts from. Returns `serve`."""
    import keras
    import tensorflow as tf

    check_single_normalisation(model, spec)
    serve, signature = serving_function(model, spec)
    check_no_random_ops(serve)
    # Keras' ExportArchive tracks the weights so the converter freezes them into the file (a bare
    # tf.Module around a Keras 3 model leaves variables the calibrator cannot read). The endpoint is
    # our inference-mode function: a plain model.export keeps random augmentation layers active.
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serve", fn=serve, input_signature=signature)
    archive.write_out(str(folder), verbose=False)
    check_no_random_ops(tf.saved_model.load(str(folder)).signatures["serve"])
    return serve
