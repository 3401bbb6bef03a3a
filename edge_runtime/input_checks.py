"""Cheap checks that a decoded image can be a chest radiograph at all, before any model runs.

Each check measures one plain property of the picture and refuses only far outside what chest
films show. The limits were set with wide margins around the 4,733 Kaggle training X-rays
(measured 2026-12-02 at 224x224: pixel spread 19.9-87 of 255, neighbouring-pixel correlation
0.951-0.997, at most 33 % of pixels in one tone bin of 64, chroma 0), so a real film is not
refused here; what passes them is left to the learned check on the model's own features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .images import to_grayscale

# A digital chest film is hundreds of pixels a side; anything this small holds no anatomy.
MIN_SIDE = 64
# Chest films are roughly square (portrait or landscape); a strip or banner is not one.
MAX_ASPECT = 3.0
# Mean of max(R, G, B) - min(R, G, B) over the picture, 0..255. Gray films saved as RGB give 0;
# a photo of a film on a lightbox stays under ~10 (white balance tint); colour photos give 30+.
MAX_CHROMA = 12.0
# Standard deviation of the 8-bit gray pixels: a film has contrast (the training X-rays >= 19.9).
MIN_SPREAD = 10.0
# Share of pixels in the most common of 64 tone bins: a page of text or a drawing is mostly
# background (the training X-rays <= 0.33).
MAX_FLAT_SHARE = 0.6
# Correlation of each pixel with its right and lower neighbours: radiographs are smooth (the
# training X-rays >= 0.951, so the limit is 0.1 below that); noise is near 0, fine textures (grass,
# gravel, brick) and scanned text 0.6-0.84.
MIN_NEIGHBOUR_CORRELATION = 0.85
# Checks run on a copy at most this large: cheap on a 4000-pixel film, and box averaging keeps
# noise uncorrelated while leaving smooth anatomy smooth.
ANALYSIS_SIDE = 256
COLOUR_MODES = ("RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")


@dataclass(frozen=True)
class ImageStats:
    width: int
    height: int
    chroma: float
    spread: float
    flat_share: float
    neighbour_correlation: float


def measure(image: Image.Image) -> ImageStats:
    """The properties the checks look at, on a box-downsampled copy of the decoded image."""
    width, height = image.size
    small = _downsampled(image)
    chroma = 0.0
    if small.mode in COLOUR_MODES:
        rgb = np.asarray(small.convert("RGB"), dtype=np.int16)
        chroma = float(np.mean(rgb.max(axis=2) - rgb.min(axis=2)))
    gray = np.asarray(to_grayscale(small), dtype=np.float64)
    tones = np.bincount((gray.astype(np.uint8) // 4).reshape(-1), minlength=64)
    return ImageStats(width, height, chroma, float(gray.std()), float(tones.max() / gray.size),
                      _neighbour_correlation(gray))


def refusal_reason(stats: ImageStats) -> str | None:
    """Why an image with these properties cannot be a chest X-ray, or None if it may be one."""
    short, long = sorted((stats.width, stats.height))
    if short < MIN_SIDE:
        return f"too small ({stats.width}x{stats.height} pixels; a chest X-ray has at least {MIN_SIDE} a side)"
    if long / short > MAX_ASPECT:
        return f"not the shape of a chest film ({stats.width}x{stats.height}, sides more than {MAX_ASPECT:g}:1)"
    if stats.chroma > MAX_CHROMA:
        return f"a colour picture (mean chroma {stats.chroma:.0f} of 255; X-rays are gray)"
    if stats.spread < MIN_SPREAD:
        return f"nearly uniform (pixel spread {stats.spread:.1f} of 255)"
    if stats.flat_share > MAX_FLAT_SHARE:
        return (f"mostly one flat tone ({stats.flat_share:.0%} of pixels): a document, drawing or "
                f"empty frame, not a radiograph")
    if stats.neighbour_correlation < MIN_NEIGHBOUR_CORRELATION:
        return (f"noise or fine texture (neighbouring pixels correlate {stats.neighbour_correlation:.2f}; "
                f"X-rays above 0.95)")
    return None


def check_image(image: Image.Image) -> str | None:
    """The reason a decoded image is refused before inference, or None."""
    return refusal_reason(measure(image))


def _downsampled(image: Image.Image) -> Image.Image:
    width, height = image.size
    factor = max(width, height) / ANALYSIS_SIDE
    if factor <= 1:
        return image
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    if image.mode in ("P", "PA", "1"):  # palette indices must not be averaged
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    elif image.mode.startswith("I;16"):  # Pillow resizes 16-bit data as 32-bit integers
        image = image.convert("I")
    return image.resize(size, Image.Resampling.BOX)


def _neighbour_correlation(gray: np.ndarray) -> float:
    """The smaller of the horizontal and vertical lag-1 correlations (1.0 for a flat image)."""
    pairs = []
    if gray.shape[1] > 1:
        pairs.append((gray[:, :-1], gray[:, 1:]))
    if gray.shape[0] > 1:
        pairs.append((gray[:-1], gray[1:]))
    correlations = [_correlation(a, b) for a, b in pairs]
    return min(correlations) if correlations else 1.0


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a.reshape(-1) - a.mean()
    b = b.reshape(-1) - b.mean()
    scale = float(np.sqrt(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b) / scale) if scale > 0 else 1.0
