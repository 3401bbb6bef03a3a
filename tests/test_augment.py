"""Augmentation does what its settings say, repeatably, and nothing when switched off."""

import dataclasses

import numpy as np
import pytest

from edgecxr.train.augment import NO_AUGMENTATION, AugmentConfig, augment_batch, mix_batch


def flat_batch(n=32, size=24):
    import tensorflow as tf

    return tf.fill([n, size, size, 1], 128.0)


def run(config, seed=(1, 2)):
    import tensorflow as tf

    return augment_batch(flat_batch(), tf.constant(seed, tf.int64), config).numpy()


def test_switched_off_it_returns_the_images_unchanged():
    assert not NO_AUGMENTATION.enabled
    assert np.array_equal(run(NO_AUGMENTATION), flat_batch().numpy())


def test_noise_sd_is_drawn_per_image_up_to_the_setting_and_repeats_with_the_seed():
    noisy = dataclasses.replace(NO_AUGMENTATION, noise=16.0)
    assert noisy.enabled
    images = run(noisy)
    sd = images.reshape(len(images), -1).std(axis=1)
    assert sd.max() <= 16.0 * 1.1 and sd.min() < 8.0 < sd.max()  # spread over [0, 16], not one level
    assert abs(images.mean() - 128.0) < 1.0  # zero-mean: no exposure shift sneaks in
    assert np.array_equal(images, run(noisy))
    assert not np.array_equal(images, run(noisy, seed=(1, 3)))


def test_default_augmentation_has_no_noise_and_no_flip():
    default = AugmentConfig()
    assert default.noise == 0.0 and default.horizontal_flip is False
    assert default.zoom == pytest.approx(0.10)


def mixed(alpha=0.2, seed=(1, 2), n=256):
    """A batch where each image's grey level, target and weight all encode its label, so one blend
    share applied to all three keeps them consistent and a mismatch shows."""
    import tensorflow as tf

    labels = tf.constant(np.arange(n) % 2, tf.float32)
    images = tf.tile(labels[:, None, None, None] * 255.0, [1, 8, 8, 1])
    return [t.numpy() for t in mix_batch(images, labels[:, None], 1.0 + 2.0 * labels, tf.constant(seed, tf.int64), alpha)]


def test_mixup_blends_images_targets_and_weights_with_one_share_per_pair():
    images, targets, weights = mixed()
    share_from_images = images[:, 0, 0, 0] / 255.0
    assert np.allclose(images, images[:, :1, :1, :])  # one blend per image, not per pixel
    assert np.allclose(targets[:, 0], share_from_images, atol=1e-5)
    assert np.allclose(weights, 1.0 + 2.0 * share_from_images, atol=1e-5)
    soft = (targets > 0.01) & (targets < 0.99)
    assert 0.1 < soft.mean() < 0.9  # some pairs blended, many close to one image: Beta(0.2, 0.2)
    again = mixed()
    assert all(np.array_equal(a, b) for a, b in zip((images, targets, weights), again))
    assert not np.array_equal(targets, mixed(seed=(1, 3))[1])
