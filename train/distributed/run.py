"""A training run's part under a tf.distribute strategy: where each worker backs up, the training
itself, and what a worker that is not the chief does (train in step, publish nothing)."""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

from edgecxr.edge_runtime import run_folder
from edgecxr.edge_runtime.console import console
from edgecxr.edge_runtime.preprocessing import PreprocessSpec

from . import strategy as distribution
from .loop import fit_distributed
from .transfer import fit_transfer_under_strategy
from ..fitting import best_epoch_index, image_weights
from ..hparams import TrainConfig
from ..inputs import Splits, load_worker_splits, train_dataset, validation_dataset
from ..model_specs import get_model_spec


def backup_folder(config: TrainConfig, role: distribution.Role) -> Path:
    """Where a distributed run backs up each epoch, so that a restarted worker resumes.

    The chief's sits next to the run folder (hidden, like the staging folder); the other workers
    keep theirs in the machine's temporary folder, named after the run, so that they write
    nothing a user sees. Each is removed when training ends.
    """
    if role.chief:
        return run_folder.backup_folder(config.out)
    tag = hashlib.sha256(str(Path(config.out).resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"edgecxr-backup-{tag}-worker{role.worker}"


def fit_under_strategy(model_spec, strategy, role: distribution.Role, splits: Splits, spec: PreprocessSpec,
                       config: TrainConfig):
    """Train a new model under `strategy`; returns an ordinary Keras model with its weights (saved and
    scored outside the strategy, by the chief alone) and the facts the run records."""
    started = time.perf_counter()
    scaling = distribution.scaled(config.batch_size, config.learning_rate, strategy.num_replicas_in_sync)
    counted = splits.train.labels if splits.all_train_labels is None else splits.all_train_labels
    weights = image_weights(splits.train.labels, config.class_weights, counted)

    def build():
        return model_spec.build(spec.input_shape, seed=config.seed, weights=config.weights)

    def worker_stream(batch_size: int, pipeline: int):
        return train_dataset(splits.train, spec, config, batch_size, config.seed + pipeline, weights, repeat=True)

    with strategy.scope():
        trained = build()
    transfer_details = None
    if model_spec.transfer:
        history, transfer_details = fit_transfer_under_strategy(
            trained, strategy, splits, spec, config, scaling, backup_folder(config, role))
        best_epoch = transfer_details["best_epoch"]
    else:
        trained, history = fit_distributed(trained, strategy, worker_stream, validation_dataset(splits.val, spec),
                                           len(splits.train_paths), scaling, config, backup_folder(config, role))
        best_epoch = best_epoch_index(history["val_loss"], config.epochs) + 1
    # Outside the strategy: a model that saves and predicts like any other (a backbone's weights are
    # all copied, so its ImageNet file need not be read again).
    model = model_spec.build(spec.input_shape, seed=config.seed,
                             weights="none" if model_spec.transfer else config.weights)
    model.set_weights(trained.get_weights())
    train_seconds = time.perf_counter() - started
    scaling.update(mode=config.distribute, workers=role.workers)
    return model, {"history": history, "train_seconds": train_seconds, "best_epoch": best_epoch,
                   "transfer": transfer_details, "distribution": scaling}


def train_worker(config: TrainConfig, role: distribution.Role, strategy) -> None:
    """A non-chief worker: train its part in step with the others, publish nothing."""
    import keras

    model_spec = get_model_spec(config.arch)
    spec = model_spec.preprocess_spec(config.image_size, config.equalize, config.crop)
    keras.utils.set_random_seed(config.seed)
    fit_under_strategy(model_spec, strategy, role, load_worker_splits(config, role, spec), spec, config)
    console.print(f"worker {role.worker} of {role.workers} done; the chief writes {config.out}", highlight=False)
