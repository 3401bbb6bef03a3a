"""Augmentation does what its settings say, repeatably, and nothing when switched off."""

import dataclasses

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

