"""The one preprocessing definition shared by training, conversion, evaluation and the Pi.

Training caches `to_pixels` output and applies `scale_pixels` itself; the edge runtime calls
`preprocess`, which is exactly those two steps. The spec travels in every model's metadata, so a
model is always fed what it was trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageOps

from .errors import MetadataError
from .images import ImageSource, open_image, to_grayscale

EQUALIZE_MODES = ("none", "histogram")
# Each edge may lose at most this share: more would cut into the lungs of a well-centred film.
MAX_CROP = 0.24
RESAMPLE_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
# A film decoded at reduced scale (JPEG DCT scaling, `predict --reduced-decode`) keeps at least this
# many times the pixels the resize produces, on each side of the cropped area, so Pillow's resize
# still averages several source pixels per output pixel. Its inputs then differ from the full
# decode's by rounding, which histogram equalisation can spread: benchmarks/measure/decode_speed.py
# measured what that does to the answers (docs/results/full-size-films.md#full-size-films-decode-speed).
REDUCED_DECODE_MARGIN = 2


@dataclass(frozen=True)
class PreprocessSpec:
    """How a decoded image becomes the model's float input tensor (NHWC, one image)."""

    height: int = 64
    width: int = 64
    channels: int = 1  # 3 for ImageNet backbones: the grayscale X-ray is repeated in each channel
    color_mode: str = "grayscale"  # X-rays are decoded to gray even when stored as RGB
    equalize: str = "histogram"  # global histogram equalisation evens out exposure and contrast
    # Share of width and height cut from each edge before resizing. The edges of an X-ray hold side
    # markers, text and collimation borders that differ between sites and say nothing about the
    # lungs; a net can learn them as shortcuts, and they skew the equalisation histogram.
    crop: float = 0.0
    resample: str = "bilinear"
    scale: float = 1.0 / 255.0  # input = pixel * scale + offset, pixel in 0..255
    offset: float = 0.0

    def __post_init__(self):
        if self.height < 8 or self.width < 8:
            raise MetadataError(f"input size {self.height}x{self.width} is too small")
        if self.channels not in (1, 3):
            raise MetadataError(f"channels must be 1 or 3, not {self.channels}")
        if self.color_mode != "grayscale":
            raise MetadataError(f"color_mode must be 'grayscale', not {self.color_mode!r}")
        if self.equalize not in EQUALIZE_MODES:
            raise MetadataError(f"equalize must be one of {EQUALIZE_MODES}, not {self.equalize!r}")
        if not 0.0 <= self.crop <= MAX_CROP:
            raise MetadataError(f"crop must be between 0 and {MAX_CROP} (a share of each edge), not {self.crop}")
        if self.resample not in RESAMPLE_FILTERS:
            raise MetadataError(f"resample must be one of {tuple(RESAMPLE_FILTERS)}, not {self.resample!r}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    @property
    def value_range(self) -> tuple[float, float]:
        """The range of model inputs, e.g. (0, 1) or (-1, 1)."""
        return (self.offset, 255.0 * self.scale + self.offset)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessSpec":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise MetadataError(f"unknown preprocessing fields {sorted(unknown)}: made by a newer edgecxr?")
        try:
            return cls(**data)
        except TypeError as exc:
            raise MetadataError(f"invalid preprocessing spec: {exc}") from None


def smallest_source_side(spec: PreprocessSpec) -> int:
    """The fewest pixels a side of a decoded film may have before `to_pixels`: what a reduced-size
    decode must not go below. Not part of the recorded definition: a decoder's choice, like its
    IDCT, that moves the decoded picture by rounding only."""
    needed = REDUCED_DECODE_MARGIN * max(spec.height, spec.width) / (1.0 - 2.0 * spec.crop)
    return int(np.ceil(needed))


def crop_edges(image: Image.Image, share: float) -> Image.Image:
    """The image without the outer `share` of its width and height on each side."""
    width, height = image.size
    dx, dy = round(width * share), round(height * share)
    return image.crop((dx, dy, width - dx, height - dy))


def to_pixels(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Decoded image -> uint8 array (height, width, channels): grayscale, cropped, resized, equalised."""
    gray = to_grayscale(image)
    if spec.crop:
        gray = crop_edges(gray, spec.crop)
    resized = gray.resize((spec.width, spec.height), RESAMPLE_FILTERS[spec.resample])
    if spec.equalize == "histogram":
        resized = ImageOps.equalize(resized)
    pixels = np.asarray(resized, dtype=np.uint8)[:, :, None]
    if spec.channels == 3:
        pixels = np.repeat(pixels, 3, axis=2)
    return pixels


def scale_pixels(pixels, spec: PreprocessSpec):
    """float32 pixels (0..255) -> model input. Works on numpy arrays and on TensorFlow tensors."""
    return pixels * np.float32(spec.scale) + np.float32(spec.offset)


def frame_input(source: ImageSource, height: int, width: int) -> np.ndarray:
    """Path, bytes, PIL image or array -> uint8 (height, width, 3) RGB frame: what a phone app hands the
    mobile model (formats.py), which preprocesses inside its graph. The film's gray in each channel,
    resized only when it is not that size already (as MediaPipe resizes a frame to the model's input)."""
    gray = to_grayscale(open_image(source))
    if gray.size != (width, height):
        gray = gray.resize((width, height), RESAMPLE_FILTERS["bilinear"])
    return np.repeat(np.asarray(gray, dtype=np.uint8)[:, :, None], 3, axis=2)


def preprocess(source: ImageSource, spec: PreprocessSpec) -> np.ndarray:
    """Path, bytes, PIL image or array -> float32 (height, width, channels) model input."""
    pixels = to_pixels(open_image(source), spec)
    return scale_pixels(pixels.astype(np.float32), spec)
