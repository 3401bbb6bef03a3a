"""The preprocessing of edge_runtime/preprocessing.py as TensorFlow ops, for a graph that takes a frame.

A phone app hands its classifier an RGB frame; if it had to grayscale, resize and equalise it
itself, each app would re-implement `to_pixels` by hand and get it subtly wrong. So the mobile
artifact carries the preprocessing inside its graph. These ops redo Pillow's own integer arithmetic
rather than approximating it, so that the graph's input to the network equals `to_pixels` bit for
bit on the same decoded pixels (tests/test_mobile.py checks this on real films):

- grayscale: ITU-R 601 weights in 16-bit fixed point with rounding, as Pillow's RGB -> L;
- crop: the same pixel counts as `preprocessing.crop_edges`;
- resize: Pillow's separable bilinear (antialiased) resampling, horizontal pass then vertical, with
  its 22-bit fixed-point taps and 8-bit rounding after each pass;
- equalisation: `ImageOps.equalize`'s lookup table from the image's own histogram.

Everything runs in int32, which the int8 quantizer leaves alone, up to the last step, a lookup of
the network's input value for each 8-bit level; so only the network is quantized.
"""

from __future__ import annotations

from math import ceil

import numpy as np

from edgecxr.edge_runtime.preprocessing import PreprocessSpec

PRECISION_BITS = 22  # Pillow's 8-bit resampling: 32 bits less 8 for the pixel and 2 for the sum
GRAY_WEIGHTS = (19595, 38470, 7471)  # 0.299, 0.587, 0.114 in 16-bit fixed point
LEVELS = 256


def bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, fixed-point weights), each (out_size, taps): which input pixels make each output
    pixel and with what integer weight, as Pillow computes them for a bilinear resize."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = filter_scale  # the triangle filter reaches one source pixel, stretched when shrinking
    taps = int(ceil(support)) * 2 + 1
    indices = np.zeros((out_size, taps), dtype=np.int32)
    weights = np.zeros((out_size, taps), dtype=np.int64)
    for out in range(out_size):
        center = (out + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        last = min(int(center + support + 0.5), in_size)
        positions = np.arange(first, last)
        distance = np.abs((positions - center + 0.5) / filter_scale)
        k = np.where(distance < 1.0, 1.0 - distance, 0.0)
        k = k / k.sum() if k.sum() else k
        # Pillow rounds each tap half away from zero: (int)(k * 2**22 +- 0.5).
        fixed = np.where(k < 0, np.trunc(k * (1 << PRECISION_BITS) - 0.5), np.trunc(k * (1 << PRECISION_BITS) + 0.5))
        indices[out, :len(positions)] = positions
        weights[out, :len(positions)] = fixed.astype(np.int64)
    used = int(np.max(np.flatnonzero(weights.any(axis=0)))) + 1  # the widest output needs no more taps
    return indices[:, :used], weights[:, :used].astype(np.int32)


class _Taps:
    """One size change's taps as graph constants, made once and shared by both passes of a square
    resize, and stored small: on a 90 kB network the full tables were 4 kB of the mobile file.

    - indices: each output's taps are consecutive pixels, so only the first is stored (the tap
      past the image's edge, which has weight 0, is clipped onto the last pixel);
    - weights: a resize by a fixed ratio repeats a few rows of weights, so the distinct rows are
      stored with which one each output uses.

    Both are rebuilt from `anchor`, a zero computed from the frame: without it the converter
    would fold them back into the full tables."""

    def __init__(self, tf, anchor):
        self.tf, self.anchor, self.made = tf, anchor, {}

    def __call__(self, in_size: int, out_size: int):
        if (in_size, out_size) not in self.made:
            tf = self.tf
            indices, weights = bilinear_taps(in_size, out_size)
            rows, which = np.unique(weights, axis=0, return_inverse=True)
            # max(table, anchor) is the table (indices are never negative) but cannot be folded,
            # nor regrouped with the addition that follows, as `table + anchor` would be.
            first = tf.maximum(tf.constant(indices[:, :1]), self.anchor)
            offsets = tf.constant(np.arange(indices.shape[1], dtype=np.int32)[None, :])
            gathered = tf.minimum(first + offsets, in_size - 1)
            chosen = tf.gather(tf.constant(rows), tf.maximum(tf.constant(which.reshape(-1).astype(np.int32)),
                                                             self.anchor))
            self.made[(in_size, out_size)] = (gathered, chosen)
        return self.made[(in_size, out_size)]


def _resample_rows(tf, taps: _Taps, pixels, in_size: int, out_size: int):
    """Pillow's horizontal pass over an int32 (H, W) image: 8-bit result, rounded and clipped. The
    vertical pass is this on the transposed image (one table, not one per axis)."""
    indices, weights = taps(in_size, out_size)
    gathered = tf.gather(pixels, indices, axis=1)  # (H, out, taps)
    total = tf.reduce_sum(gathered * weights, axis=2) + (1 << (PRECISION_BITS - 1))
    # Bilinear taps are never negative, so only the top needs clipping (rounded taps may sum past 1).
    return tf.minimum(tf.math.floordiv(total, 1 << PRECISION_BITS), LEVELS - 1)


def _equalize(tf, pixels, count: int):
    """`ImageOps.equalize` on an int32 (H, W) image of `count` pixels."""
    # pixels ** 0 (one op), not ones_like: a constant of ones would be folded into the file (200 kB
    # at 224x224).
    histogram = tf.math.unsorted_segment_sum(tf.pow(pixels, 0), pixels, LEVELS)
    below = tf.cumsum(histogram, exclusive=True)  # pixels darker than each level
    last_count = tf.gather(histogram, tf.reduce_max(pixels))  # the brightest level present
    step = tf.math.floordiv(count - last_count, LEVELS - 1)
    # The table can reach 256 at the brightest level; Pillow's point() stores it clipped to 255.
    lut = tf.minimum(tf.math.floordiv(tf.math.floordiv(step, 2) + below, tf.maximum(step, 1)), LEVELS - 1)
    # Too few pixels below the brightest level for a step (one level only included): Pillow leaves the
    # image as it is.
    return tf.where(step <= 0, pixels, tf.gather(lut, pixels))


def frame_to_input(frame, spec: PreprocessSpec, frame_height: int, frame_width: int):
    """uint8 (1, frame_height, frame_width, 3) RGB frame -> float32 model input (1, H, W, C), as
    `preprocessing.preprocess` makes it from the same pixels."""
    import tensorflow as tf

    rgb = tf.cast(frame[0], tf.int32)
    # 0 for every frame (pixels are never negative), but not foldable: x * 0 is.
    anchor = tf.minimum(rgb[0, 0, 0], 0)
    gray = (tf.reduce_sum(rgb * tf.constant(GRAY_WEIGHTS, dtype=tf.int32), axis=-1) + (1 << 15)) // (1 << 16)
    height, width = frame_height, frame_width
    if spec.crop:
        dx, dy = round(width * spec.crop), round(height * spec.crop)
        gray = gray[dy:height - dy, dx:width - dx]
        height, width = height - 2 * dy, width - 2 * dx
    if spec.resample != "bilinear":
        raise ValueError(f"the mobile graph resizes as Pillow's bilinear only, not {spec.resample!r}")
    taps = _Taps(tf, anchor)
    if width != spec.width:  # horizontal first, as Pillow
        gray = _resample_rows(tf, taps, gray, width, spec.width)
    if height != spec.height:
        gray = tf.transpose(_resample_rows(tf, taps, tf.transpose(gray), height, spec.height))
    if spec.equalize == "histogram":
        gray = _equalize(tf, gray, spec.height * spec.width)
    # The scaling as a 256-entry table of what scale_pixels makes of each level: the quantizer stores
    # the table on the network input's own int8 grid, so each level rounds once, as it does when
    # the plain int8 artifact quantizes its input (a multiply and an add would each round again).
    table = np.arange(LEVELS, dtype=np.float32) * np.float32(spec.scale) + np.float32(spec.offset)
    pixels = tf.reshape(tf.gather(tf.constant(table), gray), [1, spec.height, spec.width, 1])
    if spec.channels == 3:
        pixels = tf.repeat(pixels, 3, axis=-1)
    return pixels
