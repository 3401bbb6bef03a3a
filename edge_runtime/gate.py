"""The input gate: whether an image can be a chest X-ray at all, before any label is given.

Two stages, both here, with the label and the words a refusal is shown with:

1. **Cheap checks** on the decoded picture, before any model runs (`check_image`).
2. **The learned check** on the model's own features and the input's layout, where the model's
   metadata carries a calibrated feature reference (feature_reference.py holds and scores it;
   convert/gate_reference.py makes it). It runs on the same inference that gives the probability.

A refused image gets the label `NOT_CXR` and a reason, never NORMAL or PNEUMONIA.

Each cheap check measures one plain property of the picture and refuses only far outside what chest
films show. The limits were set with wide margins around the 4,733 Kaggle training X-rays
(measured 2026-12-02 at 224x224: pixel spread 19.9-87 of 255, neighbouring-pixel correlation
0.951-0.997, at most 33 % of pixels in one tone bin of 64, chroma 0), so a real film is not
refused here; what passes them is left to the learned check on the model's own features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageStat

from .errors import EdgecxrError
from .feature_reference import FEATURES, INPUT_LAYOUT, FeatureReference
from .images import to_grayscale

NOT_CXR = "not_cxr"  # the label of a refused image
NOT_CXR_TEXT = "not a chest X-ray"  # how every page and table shows it

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


def measure(image: Image.Image, gray: Image.Image | None = None) -> ImageStats:
    """The properties the checks look at, on a box-downsampled copy of the decoded image.

    Computed in Pillow's C code and exact sums (3.6 ms of a 224x224 film's CPU before, measured
    2026-12-03, the same values to 1e-13): the chroma from the bands' lighter and darker images, the
    spread and the tone share from the 256-bin histogram, the neighbour correlation from moments.
    `gray`: the image's grayscale, when the caller has it already (used where no downsampling is needed)."""
    width, height = image.size
    small = _downsampled(image)
    chroma = _chroma(small) if small.mode in COLOUR_MODES else 0.0
    gray = gray if gray is not None and small is image else to_grayscale(small)
    counts = np.asarray(gray.histogram()[:256], dtype=np.float64)
    n = counts.sum()
    levels = np.arange(256, dtype=np.float64)
    # The picture's sum and sum of squares, exact (integers below 2**53), from its histogram.
    total, squares = float(counts @ levels), float(counts @ (levels * levels))
    mean = total / n
    spread = math.sqrt(max(float(counts @ (levels - mean) ** 2 / n), 0.0))
    flat_share = float(counts.reshape(64, 4).sum(axis=1).max() / n)
    return ImageStats(width, height, float(chroma), spread, flat_share,
                      _neighbour_correlation(np.asarray(gray), total, squares))


def _chroma(image: Image.Image) -> float:
    """Mean of max(R, G, B) - min(R, G, B); 0 at once for a gray film saved as RGB (most JPEG exports)."""
    red, green, blue = image.convert("RGB").split()
    if ImageChops.difference(red, green).getbbox() is None and ImageChops.difference(green, blue).getbbox() is None:
        return 0.0
    brightest = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    darkest = ImageChops.darker(ImageChops.darker(red, green), blue)
    return float(ImageStat.Stat(ImageChops.subtract(brightest, darkest)).mean[0])


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


def check_image(image: Image.Image, gray: Image.Image | None = None) -> str | None:
    """The reason a decoded image is refused before inference, or None."""
    return refusal_reason(measure(image, gray))


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


def _neighbour_correlation(gray: np.ndarray, total: float, squares: float) -> float:
    """The smaller of the horizontal and vertical lag-1 correlations (1.0 for a flat image).

    From the moments of the whole flattened picture (`total` and `squares`, its sum and sum of
    squares, which the caller has from the histogram), less its edge rows and columns: each sum is
    of 8-bit values and their products, so float64 holds it exactly (below 2**53 for any picture
    the analysis size allows) and the result is the same on every CPU."""
    height, width = gray.shape
    x = np.ascontiguousarray(gray, dtype=np.float64)
    flat = x.reshape(-1)
    correlations = []
    if width > 1:  # x[:, :-1] against x[:, 1:]: the flattened neighbours less the pairs across row ends
        last, first = x[:, -1], x[:, 0]
        across = float(x[:-1, -1] @ x[1:, 0]) if height > 1 else 0.0
        correlations.append(_correlation(flat.size - height, total - last.sum(), total - first.sum(),
                                         squares - last @ last, squares - first @ first,
                                         float(flat[:-1] @ flat[1:]) - across))
    if height > 1:  # x[:-1] against x[1:]
        last, first = x[-1], x[0]
        correlations.append(_correlation(flat.size - width, total - last.sum(), total - first.sum(),
                                         squares - last @ last, squares - first @ first,
                                         float(flat[:-width] @ flat[width:])))
    return min(correlations) if correlations else 1.0


def _correlation(n: int, sa: float, sb: float, saa: float, sbb: float, sab: float) -> float:
    """Pearson's r from the pairs' count, sums, sums of squares and sum of products."""
    variance_a, variance_b = n * saa - sa * sa, n * sbb - sb * sb
    scale = math.sqrt(max(variance_a, 0.0) * max(variance_b, 0.0))
    return float((n * sab - sa * sb) / scale) if scale > 0 else 1.0


def learned_check(reference: FeatureReference, vectors: dict[str, np.ndarray]
                  ) -> tuple[list[str | None], np.ndarray | None, np.ndarray]:
    """For a batch measured in both views: each image's refusal reason (None: accepted), its gate
    distance (the larger view's; None without refusal thresholds) and its monitored coordinates."""
    projections = reference.monitored(vectors)
    if not reference.learned_check_available:
        return [None] * len(projections), None, projections
    distances = reference.distances(vectors)
    reasons = [learned_refusal(f, l) for f, l in zip(distances[FEATURES], distances[INPUT_LAYOUT])]
    return reasons, np.maximum(distances[FEATURES], distances[INPUT_LAYOUT]), projections


def learned_refusal(feature_distance: float, layout_distance: float) -> str | None:
    """Why the learned check refuses an image with these distances (1 = refusal threshold), or None."""
    if layout_distance > 1.0 and layout_distance >= feature_distance:
        return (f"its layout or polarity is unlike a chest film's (input distance {layout_distance:.1f}; refused "
                f"above 1): inverted, rotated or not a radiograph?")
    if feature_distance > 1.0:
        return (f"unlike the X-rays the model was trained on (feature distance {feature_distance:.1f}; "
                f"refused above 1)")
    return None


class Gate:
    """One model's gate: the cheap checks always, the learned check where its reference allows."""

    def __init__(self, reference: FeatureReference | None, feature_dim: int | None, model_name: str,
                 takes_frames: bool = False):
        if reference is not None and feature_dim is not None and feature_dim != reference.feature_dim:
            raise EdgecxrError(f"{model_name} exports {feature_dim} features but its metadata's reference has "
                               f"{reference.feature_dim}: re-export it")
        self.feature_dim = feature_dim
        # The reference is usable only if the graph exports the features it was made from.
        self.reference = reference if feature_dim is not None else None
        self._metadata_has_reference = reference is not None
        self._takes_frames = takes_frames

    cheap_check = staticmethod(check_image)

    def learned(self, features, inputs) -> tuple[list[str | None], np.ndarray | None, np.ndarray | None]:
        """(reasons, distances, monitored coordinates) for one inference's features and inputs."""
        if self.reference is None:
            return [None] * len(inputs), None, None
        return learned_check(self.reference, self.reference.vectors(features, inputs))

    @property
    def learned_status(self) -> str:
        """Whether images are also checked on the model's features, and if not, why not."""
        if self.feature_dim is None and self._takes_frames:
            return ("unavailable: the phone model returns the scores alone (model_int8.tflite has the learned "
                    "check)")
        if self.feature_dim is None:
            return "unavailable: the model has no feature output (exported before the input gate; re-export it)"
        if self.reference is None:
            return "unavailable: the metadata holds no feature reference (re-export with edgecxr convert)"
        if not self.reference.learned_check_available:
            n = len(self.reference.reference_probabilities)
            return (f"unavailable: too few validation images ({n}) to calibrate it to refuse at most "
                    f"{self.reference.calibration.get('refusal_rate', 0.01):.0%} of X-rays")
        return "on"
