"""What each architecture needs: its builder, input size, channels and input scaling.

The scaling lives in the preprocessing spec (and so in the metadata), never inside the model:
normalising twice is the classic cause of an int8 model that always predicts one class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.preprocessing import PreprocessSpec

from .models import compact_cnn
from .transfer import BACKBONES, build_transfer_model


@dataclass(frozen=True)
class ModelSpec:
    name: str
    default_image_size: int
    channels: int
    scale: float
    offset: float
    build: Callable  # (input_shape, **options) -> keras.Model
    description: str = ""
    transfer: bool = False  # an ImageNet backbone: trained with the strategies in transfer_training.py

    def preprocess_spec(self, image_size: int | None = None, equalize: str = "histogram",
                        crop: float = 0.0) -> PreprocessSpec:
        size = image_size or self.default_image_size
        return PreprocessSpec(height=size, width=size, channels=self.channels, equalize=equalize, crop=crop,
                              scale=self.scale, offset=self.offset)


MODEL_SPECS: dict[str, ModelSpec] = {
    "compact": ModelSpec(
        name="compact", default_image_size=64, channels=1, scale=1.0 / 255.0, offset=0.0,
        build=lambda input_shape, **_: compact_cnn(input_shape),
        description="6 conv + 2 dense layers, 64x64 grayscale, trained from scratch",
    ),
}


def _transfer_spec(arch: str) -> ModelSpec:
    backbone = BACKBONES[arch]
    return ModelSpec(
        name=arch, default_image_size=224, channels=3, scale=backbone.scale, offset=backbone.offset,
        build=lambda input_shape, weights=None, seed=None, **_: build_transfer_model(
            arch, input_shape, weights, seed=seed),
        description=backbone.description, transfer=True,
    )


MODEL_SPECS.update({arch: _transfer_spec(arch) for arch in BACKBONES})


def get_model_spec(name: str) -> ModelSpec:
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise EdgecxrError(f"unknown --arch {name!r}; choose one of {', '.join(MODEL_SPECS)}") from None
