"""What training reads: the splits decoded into pixels (whole, or one worker's shard), and the
tf.data pipelines over them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecxr.edge_runtime.folders import labelled_images
from edgecxr.edge_runtime.preprocessing import PreprocessSpec, scale_pixels

from .augment import augment_batch
from .dataset import find_splits, official_val_usable, split_by_patient
from .distributed.strategy import Role
from .fitting import image_weights
from .hparams import TrainConfig
from .pixel_cache import PixelSet, load_pixels


@dataclass
class Splits:
    train: PixelSet
    val: PixelSet
    source: str
    # Multi-worker: `train` is this worker's shard; these are all of the training split's files.
    all_train_paths: list[str] | None = None
    all_train_labels: np.ndarray | None = None

    @property
    def train_paths(self) -> list[str]:
        return self.train.paths if self.all_train_paths is None else self.all_train_paths


def load_splits(config: TrainConfig, spec: PreprocessSpec) -> Splits:
    """Decode train/ (cached) and carve validation by patient unless a usable val/ exists."""
    folders = find_splits(config.data)
    everything = load_pixels(labelled_images(folders.train), spec, "decoding train/")
    if official_val_usable(folders):
        val = load_pixels(labelled_images(folders.val), spec, "decoding val/")
        return Splits(everything, val, f"official {folders.val}")
    train_idx, val_idx = split_by_patient(everything.paths, everything.labels, config.val_fraction, config.seed)
    reason = "no val/ folder" if folders.val is None else "val/ is too small"
    return Splits(everything.subset(train_idx), everything.subset(val_idx),
                  f"{config.val_fraction:.0%} of train/ patients ({reason}), seed {config.seed}")


def load_worker_splits(config: TrainConfig, role: Role, spec: PreprocessSpec) -> Splits:
    """One worker's shard of the training split (every workers-th file) and all of validation.

    The patient split is drawn from the file list, before anything is decoded, so every worker
    draws the same one; each then decodes (and caches, under its own key) only its shard.
    """
    folders = find_splits(config.data)
    samples = labelled_images(folders.train)
    if official_val_usable(folders):
        train_samples, val_samples = samples, labelled_images(folders.val)
        source = f"official {folders.val}"
    else:
        train_idx, val_idx = split_by_patient([s.path for s in samples], [s.label for s in samples],
                                              config.val_fraction, config.seed)
        train_samples, val_samples = [samples[i] for i in train_idx], [samples[i] for i in val_idx]
        reason = "no val/ folder" if folders.val is None else "val/ is too small"
        source = f"{config.val_fraction:.0%} of train/ patients ({reason}), seed {config.seed}"
    shard = train_samples[role.worker::role.workers]
    train = load_pixels(shard, spec, f"decoding train/ shard {role.worker + 1}/{role.workers}")
    val = load_pixels(val_samples, spec, "decoding validation")
    return Splits(train, val, source, [str(s.path) for s in train_samples],
                  np.asarray([s.label for s in train_samples], dtype=np.int64))


def train_dataset(part: PixelSet, spec: PreprocessSpec, config: TrainConfig, batch_size: int, seed: int,
                  weights: np.ndarray, repeat: bool = False):
    """Shuffled batches of (scaled and augmented pixels, label, class weight); endless if `repeat`."""
    import tensorflow as tf

    def prepare_train(batch, seed):
        pixels, labels, weights = batch
        x = tf.cast(pixels, tf.float32)
        y = tf.cast(labels, tf.float32)[:, None]
        if config.augment.enabled:
            x = augment_batch(x, seed, config.augment)
        return scale_pixels(x, spec), y, weights

    # One stateless seed per batch, drawn from the run's seed: augmentation repeats exactly.
    batch_seeds = tf.data.Dataset.random(seed=seed).batch(2)
    train = (tf.data.Dataset.from_tensor_slices((part.pixels, part.labels, weights))
             .shuffle(len(part.labels), seed=seed, reshuffle_each_iteration=True))
    train = (train.repeat() if repeat else train).batch(batch_size)
    return (tf.data.Dataset.zip((train, batch_seeds))
            .map(prepare_train, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def validation_dataset(part: PixelSet, spec: PreprocessSpec):
    import tensorflow as tf

    def prepare_val(pixels, labels):
        return scale_pixels(tf.cast(pixels, tf.float32), spec), tf.cast(labels, tf.float32)[:, None]

    return (tf.data.Dataset.from_tensor_slices((part.pixels, part.labels))
            .batch(256)
            .map(prepare_val)
            .cache())


def make_datasets(splits: Splits, spec: PreprocessSpec, config: TrainConfig):
    """Batched (train, validation) datasets; train batches carry each image's class weight."""
    weights = image_weights(splits.train.labels, config.class_weights)
    return (train_dataset(splits.train, spec, config, config.batch_size, config.seed, weights),
            validation_dataset(splits.val, spec))
