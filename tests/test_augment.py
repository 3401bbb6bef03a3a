"""Augmentation does what its settings say, repeatably, and nothing when switched off."""

import numpy as np
import pytest

from edgecxr.train.augment import NO_AUGMENTATION, AugmentConfig, augment_batch


def flat_batch(n=32, size=24):
    import tensorflow as tf

    return tf.fill([n, size, size, 1], 128.0)


def run(config, seed=(1, 2)):
    import tensorflow as tf

    return augment_batch(flat_batch(), tf.constant(seed, tf.int64), config).numpy()


def test_switched_off_it_returns_the_images_unchanged():
    assert not NO_AUGMENTATION.enabled
    assert np.array_equal(run(NO_AUGMENTATION), flat_batch().numpy())


def test_default_augmentation_has_no_flip():
    default = AugmentConfig()
    assert default.horizontal_flip is False
    assert default.zoom == pytest.approx(0.10)



# --- framing crop and gamma, on real X-rays as the compact model's training pipeline sees them ---

def real_batch(data_root, per_class=8):
    """The first images of each class of train/, decoded and equalised at 64x64 like a training batch."""
    import tensorflow as tf

    from edgecxr.edge_runtime.images import open_image, to_grayscale
    from edgecxr.edge_runtime.preprocessing import to_pixels
    from edgecxr.train.model_specs import get_model_spec

    spec = get_model_spec("compact").preprocess_spec(None, "histogram", 0.0)
    paths = [p for label in ("NORMAL", "PNEUMONIA") for p in sorted((data_root / "train" / label).iterdir())[:per_class]]
    return tf.constant(np.stack([to_pixels(to_grayscale(open_image(p)), spec) for p in paths]).astype(np.float32))


def augmented(batch, config, seed=(1, 2)):
    import tensorflow as tf

    return augment_batch(batch, tf.constant(seed, tf.int64), config).numpy()


# Per-image means of the default augmentation of real_batch with seed (1, 2), recorded from the code
# before the framing crop and gamma were added (commit e754050): the default training pipeline is
# unchanged only if these still come out.
DEFAULT_MEANS_BEFORE = [120.4730, 118.5564, 128.4691, 114.9953, 148.2967, 150.7056, 142.6378, 141.6101,
                        120.7056, 123.6809, 119.1532, 121.6391, 124.7809, 105.2049, 104.0933, 114.0212]


def test_default_augmentation_is_what_it_was_before_framing_and_gamma(data_root):
    default = AugmentConfig()
    assert (default.frame_area, default.frame_aspect, default.gamma) == (0, 0, 0)
    means = augmented(real_batch(data_root), default).reshape(16, -1).mean(axis=1)
    assert means == pytest.approx(DEFAULT_MEANS_BEFORE, abs=0.01)


FRAME_ONLY = AugmentConfig(0, 0, 0, 0, 0, 0, False, frame_area=0.65, frame_aspect=0.29)
GAMMA_ONLY = AugmentConfig(0, 0, 0, 0, 0, 0, False, gamma=0.35)


def roughness(images):
    """Mean absolute difference of neighbouring pixels: a crop stretched to full size lowers it."""
    return float(np.abs(np.diff(images, axis=2)).mean())


def test_framing_crop_keeps_shape_and_range_and_magnifies(data_root):
    batch = real_batch(data_root)
    out = augmented(batch, FRAME_ONLY)
    assert FRAME_ONLY.enabled and out.shape == tuple(batch.shape)
    original = batch.numpy()
    # Bilinear samples inside the image can only interpolate between its own pixels.
    assert (out.min(axis=(1, 2, 3)) >= original.min(axis=(1, 2, 3)) - 1e-3).all()
    assert (out.max(axis=(1, 2, 3)) <= original.max(axis=(1, 2, 3)) + 1e-3).all()
    assert all(not np.allclose(o, i) for o, i in zip(out, original))
    assert roughness(out) < 0.9 * roughness(original)


def test_framing_crop_stays_inside_the_image(data_root):
    """No window reaches past an edge: a black frame painted round the image never grows inwards."""
    framed = real_batch(data_root).numpy().copy()
    framed[:, :2], framed[:, -2:], framed[:, :, :2], framed[:, :, -2:] = 0, 0, 0, 0
    interior = framed[:, 2:-2, 2:-2]
    out = augmented(np.asarray(framed), FRAME_ONLY)
    # Rows 3 pixels in would be black only if a window began outside the image (zoom out would).
    assert (out[:, 3:-3, 3:-3] > 0).mean() >= (interior > 0).mean() - 0.01


def test_gamma_is_a_monotone_curve_per_image_both_ways(data_root):
    batch = real_batch(data_root)
    original, out = batch.numpy(), augmented(batch, GAMMA_ONLY)
    for before, after in zip(original.reshape(16, -1), out.reshape(16, -1)):
        order = np.argsort(before, kind="stable")
        assert (np.diff(after[order]) >= -1e-3).all()  # brighter input pixels stay brighter
    assert out.min() >= 0.0 and out.max() <= 255.0
    shift = (out - original).reshape(16, -1).mean(axis=1)
    assert (shift > 1).any() and (shift < -1).any()  # g < 1 brightens, g > 1 darkens; both are drawn


def test_new_augmentations_repeat_with_the_seed_and_change_with_it(data_root):
    batch = real_batch(data_root)
    config = AugmentConfig(frame_area=0.3, frame_aspect=0.15, gamma=0.2)
    first, again, other = (augmented(batch, config, seed) for seed in ((5, 6), (5, 6), (5, 7)))
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)
    assert not np.allclose(first, augmented(batch, AugmentConfig(), (5, 6)))
