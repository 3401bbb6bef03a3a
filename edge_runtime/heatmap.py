"""Where on the film the model's answer comes from, with the edge runtime alone: two methods.

- **cam** (the default where the model allows): a class-activation map from the same inference that
  gave the answer. Every artifact exports the last convolutional feature map beside the
  probability, and its metadata carries the classifier head's weights (convert/class_activation.py);
  the map is the feature map weighted, channel by channel, by the gradient of the logit with respect
  to the pooled features at this image (the head's weights for a linear head: CAM, Zhou et al. 2016;
  gated by the hidden units this image switches on for a Dense-ReLU head: Grad-CAM, Selvaraju et al.
  2017). It costs a weighted sum, no extra inference.
- **occlusion**: a grey patch slides over the model's input; wherever covering the film moves
  P(pneumonia) away from the predicted label, that region was evidence for it. One inference per
  patch position (`HeatMap.evaluations`), for any model, also those exported before the map output.

    analysis = predictor.analyse("film.dcm", heatmap="cam")   # one decode, one inference
    png = overlay_png(analysis.image, analysis.heat)
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

METHODS = ("cam", "occlusion")
AUTO = "auto"  # cam where the model allows, occlusion for models exported before the map output
# Patches per side: 8 puts a patch over about one lung zone (upper/middle/lower, left/right) on a
# 64x64 or 224x224 input. Patches overlap by half, so a side has 2 * 8 - 1 = 15 positions (225 runs).
DEFAULT_PATCHES = 8
# Overlay colours, cold to hot; Pillow's three-colour ramp needs no plotting library.
COLD, MIDDLE, HOT = (40, 0, 120), (230, 40, 40), (255, 240, 60)
MAX_ALPHA = 0.6


@dataclass(frozen=True)
class HeatMap:
    """Where the evidence for one image's label lies.

    heat: float32 (height, width) in [0, 1] at the model's input size: the evidence for the label
    shown, relative to the image's strongest (all zeros when nothing points that way).
    change: float32 (height, width), signed, negative where the region is evidence for pneumonia.
    Occlusion: the mean change of P(pneumonia) when the pixel is covered (occluded minus original).
    CAM: minus the region's contribution to the logit (cam), so the two methods share a sign.
    box: the film region (left, top, right, bottom, in film pixels) the input covers, i.e. the
    film minus the preprocessing's edge crop.
    """

    heat: np.ndarray
    change: np.ndarray
    probability: float
    label: str
    box: tuple[int, int, int, int]
    film_size: tuple[int, int]  # (width, height) of the decoded film
    patch: int  # occlusion: the patch side; cam: input pixels per feature-map cell
    stride: int
    evaluations: int  # model inputs run for the map, the answer's own inference included
    elapsed_ms: float  # occlusion: decode + preprocessing + every inference; cam: the map's own arithmetic
    method: str = "occlusion"

    def to_dict(self) -> dict:
        """What it cost and how it was made (the maps themselves go to the PNG)."""
        return {"method": self.method, "probability": round(self.probability, 6), "label": self.label,
                "patch": self.patch, "stride": self.stride, "evaluations": self.evaluations,
                "elapsed_ms": round(self.elapsed_ms, 1)}


def choose_method(requested: str, predictor) -> str:
    """`requested` ("cam", "occlusion" or "auto"), or why the model cannot give it."""
    if getattr(predictor.backend, "takes_frames", False):
        raise EdgecxrError(f"{predictor.metadata.model_file or 'the mobile model'} takes whole frames and returns the "
                           f"scores alone, so it draws no heat map: use model_int8.tflite for heat maps")
    if requested == AUTO:
        return "cam" if cam_available(predictor) else "occlusion"
    if requested not in METHODS:
        raise EdgecxrError(f"heat-map method must be one of {AUTO}, {', '.join(METHODS)}, not {requested!r}")
    if requested == "cam" and not cam_available(predictor):
        raise EdgecxrError(cam_unavailable_reason(predictor))
    return requested


def cam_available(predictor) -> bool:
    return bool(getattr(predictor.backend, "has_feature_map", False)) and class_activation_head(predictor) is not None


def cam_unavailable_reason(predictor) -> str:
    name = predictor.metadata.model_file or "the model"
    if not getattr(predictor.backend, "has_feature_map", False):
        return (f"{name} exports no feature map (exported before class-activation heat maps): re-export it "
                f"with edgecxr convert, or use --heatmap-method occlusion")
    return (f"{name}'s classifier head is not Dense layers after pooling, so its metadata holds no head for a "
            f"class-activation map: use --heatmap-method occlusion")


def class_activation_head(predictor) -> dict | None:
    details = predictor.metadata.details if isinstance(predictor.metadata.details, dict) else {}
    head = details.get("class_activation")
    return head if isinstance(head, dict) and head.get("dense") else None


def logit_gradient(head: dict, features: np.ndarray) -> np.ndarray:
    """d logit / d pooled features at this image, for a chain of Dense layers (the last one's
    activation, a sigmoid, is what turns the logit into the probability and is left out)."""
    layers = head["dense"]
    x, gates = np.asarray(features, dtype=np.float64), []
    for layer in layers[:-1]:
        z = x @ np.asarray(layer["kernel"], dtype=np.float64) + np.asarray(layer["bias"], dtype=np.float64)
        gates.append(z > 0 if layer["activation"] == "relu" else np.ones_like(z, dtype=bool))
        x = np.maximum(z, 0.0) if layer["activation"] == "relu" else z
    gradient = np.asarray(layers[-1]["kernel"], dtype=np.float64)[:, 0]
    for layer, gate in zip(reversed(layers[:-1]), reversed(gates)):
        gradient = np.asarray(layer["kernel"], dtype=np.float64) @ (gradient * gate)
    return gradient


def class_activation_map(predictor, feature_map: np.ndarray, features: np.ndarray, probability: float,
                         film_size: tuple[int, int], box: tuple[int, int, int, int]) -> HeatMap:
    """The class-activation map of one inference: its (h, w, C) feature map and (C,) pooled features."""
    started = time.perf_counter()
    head = class_activation_head(predictor)
    if head is None:
        raise EdgecxrError(cam_unavailable_reason(predictor))
    feature_map = np.asarray(feature_map, dtype=np.float64)
    weights = logit_gradient(head, features)
    if feature_map.ndim != 3 or feature_map.shape[-1] != len(weights):
        raise EdgecxrError(f"the feature map {feature_map.shape} does not match the head's {len(weights)} inputs")
    # Each cell's share of the logit: pooling averages the cells, so the map sums to (logit - rest) x cells.
    cam = feature_map @ weights / (feature_map.shape[0] * feature_map.shape[1])
    height, width = predictor.spec.height, predictor.spec.width
    signed = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR))
    label = predictor.label_for(probability)
    evidence = np.clip(signed if label == predictor.positive_label else -signed, 0.0, None)
    peak = float(evidence.max())
    cell = max(1, height // feature_map.shape[0])
    return HeatMap(heat=(evidence / peak if peak > 0 else evidence).astype(np.float32),
                   change=(-signed).astype(np.float32), probability=float(probability), label=label, box=box,
                   film_size=film_size, patch=cell, stride=cell, evaluations=1,
                   elapsed_ms=(time.perf_counter() - started) * 1000.0, method="cam")


def check_patches(patches: int) -> None:
    if not 2 <= patches <= 64:
        raise EdgecxrError(f"patches per side must be between 2 and 64, not {patches}")


def occlusion_map(predictor, model_input: np.ndarray, probability: float, film_size: tuple[int, int],
                  box: tuple[int, int, int, int], patches: int = DEFAULT_PATCHES,
                  batch_size: int | None = None, started: float | None = None) -> HeatMap:
    """Occlusion sensitivity around one preprocessed input whose probability is already known."""
    check_patches(patches)
    started = time.perf_counter() if started is None else started
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

    size = batch_size or batch_size_for(tuple(model_input.shape))
    scores = predict_in_batches(predictor.backend.predict_proba, np.arange(len(corners)), batch_size=size,
                                prepare=occluded)
    total = np.zeros((height, width), dtype=np.float64)
    count = np.zeros((height, width), dtype=np.float64)
    for (top, left), score in zip(corners, scores):
        total[top:top + patch_h, left:left + patch_w] += score - probability
        count[top:top + patch_h, left:left + patch_w] += 1.0
    change = (total / np.maximum(count, 1.0)).astype(np.float32)
    label = predictor.label_for(probability)
    # Evidence for the label shown: pneumonia evidence lowers P when covered, normal evidence raises it.
    evidence = np.clip(-change if label == predictor.positive_label else change, 0.0, None)
    peak = float(evidence.max())
    heat = (evidence / peak if peak > 0 else evidence).astype(np.float32)
    return HeatMap(heat=heat, change=change, probability=float(probability), label=label, box=box,
                   film_size=film_size, patch=patch_h, stride=stride_h, evaluations=len(corners) + 1,
                   elapsed_ms=(time.perf_counter() - started) * 1000.0, method="occlusion")


def heatmap(predictor, source: ImageSource, patches: int = DEFAULT_PATCHES, batch_size: int | None = None,
            method: str = "occlusion") -> HeatMap:
    """The heat map of `source` under `predictor` (an edge_runtime.predictor.Predictor), by `method`.

    The input gate is not applied here: call it for images `predictor.predict` labelled, never for
    refused ones (`Predictor.analyse` does both in one pass). Raises ImageError for an unreadable image.
    """
    choose_method(method, predictor)
    if method == "occlusion":
        check_patches(patches)  # before the decode: a bad argument costs nothing
    started = time.perf_counter()
    spec = predictor.spec
    film = open_image(source)
    model_input = scale_pixels(to_pixels(film, spec).astype(np.float32), spec)
    box = input_box(film, spec.crop)
    inference = predictor.backend.infer(model_input[None], feature_maps=method == "cam")
    probability = float(inference.probabilities[0])
    if method == "cam":
        return class_activation_map(predictor, inference.feature_maps[0], inference.features[0], probability,
                                    film.size, box)
    return occlusion_map(predictor, model_input, probability, film.size, box, patches, batch_size, started)


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


def input_box(film: Image.Image, crop: float) -> tuple[int, int, int, int]:
    """The film region preprocessing keeps: the same rounding as preprocessing.crop_edges."""
    width, height = film.size
    dx, dy = round(width * crop), round(height * crop)
    return (dx, dy, width - dx, height - dy)
