"""Where on the film the model's answer comes from: occlusion sensitivity, with the edge runtime alone.

A grey patch slides over the model's input; wherever covering the film moves P(pneumonia) away
from the predicted label, that region was evidence for it. It needs nothing but the model's own
forward pass, so it works for every format the runtime loads (TFLite or ONNX, fp32 or int8) and
for models exported before this module existed; a class-activation output would need a change to
every exported graph. The cost is one inference per patch position (`HeatMap.evaluations`), run
in memory-sized batches through `batching.predict_in_batches`.

    result = heatmap(predictor, "film.dcm")     # call it for images the predictor accepted
    png = overlay_png(open_image("film.dcm"), result)
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from .batching import batch_size_for, predict_in_batches
from .errors import EdgecxrError
from .images import ImageSource, open_image, to_grayscale
from .preprocessing import scale_pixels, to_pixels

# Patches per side: 8 puts a patch over about one lung zone (upper/middle/lower, left/right) on a
# 64x64 or 224x224 input. Patches overlap by half, so a side has 2 * 8 - 1 = 15 positions (225 runs).
DEFAULT_PATCHES = 8
# Overlay colours, cold to hot; Pillow's three-colour ramp needs no plotting library.
COLD, MIDDLE, HOT = (40, 0, 120), (230, 40, 40), (255, 240, 60)
MAX_ALPHA = 0.6


@dataclass(frozen=True)
class HeatMap:
    """Occlusion sensitivity of one image.

    heat: float32 (height, width) in [0, 1] at the model's input size: how much covering each
    pixel's neighbourhood moved P(pneumonia) away from the predicted label, relative to the
    image's largest such change (all zeros when no patch moved it that way).
    change: float32 (height, width), the unnormalised mean change of P(pneumonia) when the pixel
    is covered (occluded minus original; negative: the region was evidence for pneumonia).
    box: the film region (left, top, right, bottom, in film pixels) the input covers, i.e. the
    film minus the preprocessing's edge crop.
    """

    heat: np.ndarray
    change: np.ndarray
    probability: float
    label: str
    box: tuple[int, int, int, int]
    film_size: tuple[int, int]  # (width, height) of the decoded film
    patch: int
    stride: int
    evaluations: int  # model inputs run, the unoccluded one included
    elapsed_ms: float  # decode + preprocessing + every inference

    def to_dict(self) -> dict:
        """What it cost and how it was made (the maps themselves go to the PNG)."""
        return {"probability": round(self.probability, 6), "label": self.label, "patch": self.patch,
                "stride": self.stride, "evaluations": self.evaluations, "elapsed_ms": round(self.elapsed_ms, 1)}


def heatmap(predictor, source: ImageSource, patches: int = DEFAULT_PATCHES, batch_size: int | None = None) -> HeatMap:
    """Occlusion sensitivity of `source` under `predictor` (an edge_runtime.predictor.Predictor).

    The input gate is not applied here: call it for images `predictor.predict` labelled, never for
    refused ones. `patches` sets the patch to input_side / patches (half-overlapping). Raises
    ImageError for an unreadable image.
    """
    if not 2 <= patches <= 64:
        raise EdgecxrError(f"patches per side must be between 2 and 64, not {patches}")
    started = time.perf_counter()
    spec = predictor.spec
    film = open_image(source)
    pixels = to_pixels(film, spec)
    model_input = scale_pixels(pixels.astype(np.float32), spec)
    height, width = model_input.shape[:2]
    patch_h, patch_w = max(1, height // patches), max(1, width // patches)
    stride_h, stride_w = max(1, patch_h // 2), max(1, patch_w // 2)
    tops = _positions(height, patch_h, stride_h)
    lefts = _positions(width, patch_w, stride_w)
    corners = np.array([(top, left) for top in tops for left in lefts], dtype=np.int64)
    # Grey at the image's own mean: a neutral patch for this exposure, whatever the input range.
    fill = np.float32(model_input.mean())

    def occluded(indices: np.ndarray) -> np.ndarray:
        batch = np.repeat(model_input[None], len(indices), axis=0)
        for row, index in enumerate(indices):
            top, left = corners[index]
            batch[row, top:top + patch_h, left:left + patch_w, :] = fill
        return batch

    predict = predictor.backend.predict_proba
    size = batch_size or batch_size_for(tuple(model_input.shape))
    original = float(predict(model_input[None])[0])
    scores = predict_in_batches(predict, np.arange(len(corners)), batch_size=size, prepare=occluded)

    total = np.zeros((height, width), dtype=np.float64)
    count = np.zeros((height, width), dtype=np.float64)
    for (top, left), score in zip(corners, scores):
        total[top:top + patch_h, left:left + patch_w] += score - original
        count[top:top + patch_h, left:left + patch_w] += 1.0
    change = (total / np.maximum(count, 1.0)).astype(np.float32)
    label = predictor.label_for(original)
    # Evidence for the label shown: pneumonia evidence lowers P when covered, normal evidence raises it.
    evidence = -change if label == predictor.positive_label else change
    evidence = np.clip(evidence, 0.0, None)
    peak = float(evidence.max())
    heat = (evidence / peak if peak > 0 else evidence).astype(np.float32)
    return HeatMap(heat=heat, change=change, probability=original, label=label, box=_input_box(film, spec.crop),
                   film_size=film.size, patch=patch_h, stride=stride_h, evaluations=len(corners) + 1,
                   elapsed_ms=(time.perf_counter() - started) * 1000.0)


def overlay(film: ImageSource, heat: HeatMap | np.ndarray, alpha: float = MAX_ALPHA) -> Image.Image:
    """The film in grey with the heat drawn over it in colour (hot = strong evidence), as an RGB image.

    `heat` is a HeatMap (placed over the film region its input covered) or a 2-D array in [0, 1]
    (stretched over the whole film).
    """
    gray = to_grayscale(open_image(film))
    if isinstance(heat, HeatMap):
        values, box = heat.heat, heat.box
        if gray.size != heat.film_size:
            raise EdgecxrError(f"the heat map was made for a {heat.film_size[0]}x{heat.film_size[1]} film, "
                               f"not {gray.size[0]}x{gray.size[1]}")
    else:
        values, box = np.asarray(heat, dtype=np.float32), (0, 0, *gray.size)
    if values.ndim != 2 or not np.isfinite(values).all():
        raise EdgecxrError(f"a heat map must be a finite 2-D array, not shape {values.shape}")
    level = Image.fromarray((np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), mode="L")
    level = level.resize((box[2] - box[0], box[3] - box[1]), Image.Resampling.BILINEAR)
    full = Image.new("L", gray.size, 0)
    full.paste(level, box[:2])
    colour = ImageOps.colorize(full, black=COLD, white=HOT, mid=MIDDLE)
    # Cold regions stay see-through, so the film is still read where the model found nothing.
    mask = full.point(lambda v: int(v * alpha))
    return Image.composite(colour, gray.convert("RGB"), mask)


def overlay_png(film: ImageSource, heat: HeatMap | np.ndarray, alpha: float = MAX_ALPHA) -> bytes:
    """`overlay` encoded as PNG bytes."""
    buffer = io.BytesIO()
    overlay(film, heat, alpha).save(buffer, format="PNG")
    return buffer.getvalue()


def _positions(side: int, patch: int, stride: int) -> list[int]:
    positions = list(range(0, max(side - patch, 0) + 1, stride))
    if positions[-1] != side - patch and side > patch:  # the last row/column of pixels is covered too
        positions.append(side - patch)
    return positions


def _input_box(film: Image.Image, crop: float) -> tuple[int, int, int, int]:
    """The film region preprocessing keeps: the same rounding as preprocessing.crop_edges."""
    width, height = film.size
    dx, dy = round(width * crop), round(height * crop)
    return (dx, dy, width - dx, height - dy)
