"""Training-time augmentation, applied in the tf.data pipeline and never part of the model.

Keeping it out of the model means exported graphs contain no random layers (they would break
ONNX export and waste time on the Pi). Rotation, zoom, shift, shear and the framing crop are
composed into one affine warp per image: one resampling pass instead of five, which matters on a
2-core CPU.

The framing crop and gamma are what a new site changes that the default jitter does not: how
tightly the film is collimated and at what aspect ratio, and the exposure curve. Both are off by
default (research/shift_augment_rule.md decides whether they earn a place there).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class AugmentConfig:
    """Geometric and photometric jitter in the style of the seed studies; flips are off by default
    because a chest X-ray is not left-right symmetric (heart on the left)."""

    rotation_degrees: float = 10.0
    zoom: float = 0.10
    shift: float = 0.10
    shear: float = 0.05
    brightness: float = 0.10  # fraction of the 0..255 range added or removed
    contrast: float = 0.20  # contrast factor drawn from [1 - c, 1 + c]
    horizontal_flip: bool = False
    # Random resized crop: a window of [1 - frame_area, 1] of the image's area, its aspect ratio
    # exp(U[-frame_aspect, frame_aspect]) (clipped to the image), stretched back to full size.
    frame_area: float = 0.0
    frame_aspect: float = 0.0
    gamma: float = 0.0  # exposure curve x ** g, g = exp(U[-gamma, gamma]) on pixels scaled to 0..1

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def enabled(self) -> bool:
        return any([self.rotation_degrees, self.zoom, self.shift, self.shear, self.brightness,
                    self.contrast, self.horizontal_flip, self.frame_area, self.frame_aspect, self.gamma])


NO_AUGMENTATION = AugmentConfig(0, 0, 0, 0, 0, 0, False, 0, 0, 0)
MAX_FRAME_AREA = 0.9  # a window of at least a tenth of the image, or nothing is left of the chest


def frame_window(uniform, width: float, height: float, config: AugmentConfig):
    """(scale_x, scale_y, offset_x, offset_y) of each image's crop window, in pixels of the input.

    Sampling the whole window inside the image (never outside, unlike zoom) means the crop only ever
    loses the border, as a tighter collimation does; the window's centre is uniform over what fits.
    """
    import tensorflow as tf

    area = 1.0 - config.frame_area / 2.0 + uniform(9, config.frame_area / 2.0)  # U[1 - frame_area, 1]
    aspect = tf.exp(uniform(10, config.frame_aspect))
    scale_x = tf.minimum(tf.sqrt(area * aspect), 1.0)
    scale_y = tf.minimum(tf.sqrt(area / aspect), 1.0)
    offset_x = (0.5 + uniform(11, 0.5)) * (1.0 - scale_x) * width
    offset_y = (0.5 + uniform(12, 0.5)) * (1.0 - scale_y) * height
    return scale_x, scale_y, offset_x, offset_y


def augment_batch(images, seed, config: AugmentConfig):
    """Randomly warp and re-expose a batch of float pixels (0..255), shape (B, H, W, C).

    `seed` is a stateless seed (two int64s) that differs per batch, so a run is repeatable.
    """
    import tensorflow as tf

    batch = tf.shape(images)[0]
    height, width = float(images.shape[1]), float(images.shape[2])

    def uniform(index, limit):
        stream = tf.random.experimental.stateless_fold_in(seed, index)
        return tf.random.stateless_uniform([batch], stream, -limit, limit)

    angle = uniform(1, math.radians(config.rotation_degrees))
    scale = 1.0 + uniform(2, config.zoom)  # >1 samples a larger area: zoom out
    shear = uniform(3, config.shear)
    shift_x = uniform(4, config.shift) * width
    shift_y = uniform(5, config.shift) * height
    # The warp maps each output pixel to the input pixel it samples from; since every parameter is
    # drawn symmetrically, using the matrix directly (not its inverse) gives the same distribution.
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    a0, a1 = cos, -sin + shear * cos
    b0, b1 = sin, cos + shear * sin
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    a2 = cx - a0 * cx - a1 * cy + shift_x
    b2 = cy - b0 * cx - b1 * cy + shift_y
    if config.frame_area or config.frame_aspect:
        # The window is stretched to the full frame and then warped, so the output samples the
        # input at window(warp(p)): the window's scale and offset wrap the warp's matrix.
        sx, sy, ox, oy = frame_window(uniform, width, height, config)
        a0, a1, a2 = sx * a0, sx * a1, sx * a2 + ox
        b0, b1, b2 = sy * b0, sy * b1, sy * b2 + oy
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    images = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST",
    )
    if config.horizontal_flip:
        flip = uniform(6, 1.0) > 0.0
        images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    if config.contrast:
        factor = 1.0 + uniform(7, config.contrast)
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = (images - mean) * factor[:, None, None, None] + mean
    if config.brightness:
        images = images + uniform(8, config.brightness * 255.0)[:, None, None, None]
    if config.gamma:
        # After contrast and brightness, on the clipped range: a power of a negative is undefined.
        exponent = tf.exp(uniform(13, config.gamma))[:, None, None, None]
        images = 255.0 * tf.pow(tf.clip_by_value(images, 0.0, 255.0) / 255.0, exponent)
    return tf.clip_by_value(images, 0.0, 255.0)

