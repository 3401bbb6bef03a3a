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

