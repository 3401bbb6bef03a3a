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


@dataclass(frozen=True)
class ModelSpec:
    name: str
    default_image_size: int
    channels: int
    scale: float
    offset: float
    build: Callable  # (input_shape, **options) -> keras.Model
    description: str = ""

    def preprocess_spec(self, image_size: int | None = None, equalize: str = "histogram") -> PreprocessSpec:
        size = image_size or self.default_image_size
        return PreprocessSpec(height=size, width=size, channels=self.channels, equalize=equalize,
                              scale=self.scale, offset=self.offset)


MODEL_SPECS: dict[str, ModelSpec] = {
    "compact": ModelSpec(
        name="compact", default_image_size=64, channels=1, scale=1.0 / 255.0, offset=0.0,
        build=lambda input_shape, **_: compact_cnn(input_shape),
        description="6 conv + 2 dense layers, 64x64 grayscale, trained from scratch",
    ),
}


def get_model_spec(name: str) -> ModelSpec:
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise EdgecxrError(f"unknown --arch {name!r}; choose one of {', '.join(MODEL_SPECS)}") from None
