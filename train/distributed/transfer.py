"""ImageNet backbones under a tf.distribute strategy: both transfer strategies, sharded per worker.

What runs where (every worker runs the same code on its own data):
- The frozen bottom's activations (the heavy part on a CPU) are computed by each worker for its own
  shard of train/ only, once per augmented pass, plus all of validation (every worker scores it, as
  in the compact CNN's loop). Nothing is exchanged: the bottom is frozen, and its weights are the
  same on every worker (ImageNet, or the chief's initial values, which the strategy broadcasts).
- Phase 1 (head) and phase 2 (fine-tuning above the cut) train the top part on those cached
  activations in loop.py's loop: all-reduced gradients, the global batch and the learning
  rate scaled, early stopping on the chief's validation numbers, a backup after every epoch.
- Phase 1's outcome (its history and best weights) is kept next to the phase backups, so that a
  restart during phase 2 does not train the head again. The activations are computed again at every
  start (they are a deterministic function of the shard, the seed and the frozen weights).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.atomic import atomic_path, write_json_atomic
from edgecxr.edge_runtime.console import console
from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.preprocessing import PreprocessSpec

from .loop import _lowest_over_workers, fit_distributed
from ..fitting import best_epoch_index, image_weights
from ..hparams import TrainConfig
from ..transfer_training import _set_trainable, cut_activations, find_cut, fine_tune_phase, pass_batches

HEAD_DONE = "head-done.json"
HEAD_WEIGHTS = "head-done.npz"


def _save_head(backup_root: Path, history: dict, weights: list) -> None:
    with atomic_path(backup_root / HEAD_WEIGHTS) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **{f"w{i}": w for i, w in enumerate(weights)})
    write_json_atomic(backup_root / HEAD_DONE, {"history": history})  # last: it says the pair is whole


def _load_head(backup_root: Path):
    if not (backup_root / HEAD_DONE).is_file():
        return None
    history = json.loads((backup_root / HEAD_DONE).read_text(encoding="utf-8"))["history"]
    with np.load(backup_root / HEAD_WEIGHTS) as saved:
        return history, [saved[f"w{i}"] for i in range(len(saved.files))]


def _agreed_head(strategy, backup_root: Path):
    """Phase 1's saved outcome if every worker has it, None if none has; a clear error otherwise
    (a worker was killed in the moment between the end of phase 1 and writing it)."""
    done = _load_head(backup_root)
    all_done = _lowest_over_workers(strategy, int(done is not None))
    none_done = _lowest_over_workers(strategy, int(done is None))
    if not all_done and not none_done:
        raise EdgecxrError(f"the workers' backups disagree on whether the head phase finished; delete "
                           f"{backup_root} on every worker to start over")
    return done


def fit_transfer_under_strategy(model, strategy, splits, spec: PreprocessSpec, config: TrainConfig,
                                scaling: dict, backup_root: Path) -> tuple[dict, dict]:
    """Train `model` (built under the strategy's scope) with config.strategy. Returns (history,
    details for the metadata), as transfer_training.fit_transfer does for one process."""
    import tensorflow as tf

    cut = find_cut(model, config.strategy, config.fine_tune_from)
    augment = config.augment if config.augment.enabled else None
    passes_wanted = config.augment_passes if augment is not None else 1
    started = time.perf_counter()
    passes = [cut_activations(cut.bottom, splits.train.pixels, spec, augment, (config.seed, p),
                              f"backbone features of this shard, pass {p + 1}/{passes_wanted}")
              for p in range(passes_wanted)]
    val_features = cut_activations(cut.bottom, splits.val.pixels, spec, description="backbone features, validation")
    feature_seconds = time.perf_counter() - started
    console.print(f"cached activations at {cut.layer} {tuple(passes[0].shape[1:])} of {len(splits.train.labels)} "
                  f"shard images for {passes_wanted} pass(es) in {feature_seconds:.0f}s", highlight=False)

    labels = splits.train.labels
    counted = labels if splits.all_train_labels is None else splits.all_train_labels
    weights = image_weights(labels, config.class_weights, counted)

    def stream(batch_size: int, pipeline: int):
        return pass_batches(passes, labels, weights, batch_size, config.seed + pipeline)

    validation = (tf.data.Dataset.from_tensor_slices((val_features, splits.val.labels[:, None].astype(np.float32)))
                  .batch(256).cache())
    n_train = len(splits.train_paths)
    backup_root = Path(backup_root)
    backup_root.mkdir(parents=True, exist_ok=True)

    head_parameters = _set_trainable(cut.top, head_only=True)
    head_epochs = config.epochs if config.strategy == "feature-extract" else config.head_epochs
    done = _agreed_head(strategy, backup_root) if config.strategy == "fine-tune" else None
    if done is not None:
        history, head_weights = done
        cut.top.set_weights(head_weights)
        console.print(f"phase 1 finished before the restart ({len(history['loss'])} epochs): its weights are "
                      f"restored from {backup_root}", highlight=False)
    else:
        console.print(f"phase 1: head only ({head_parameters} trainable parameters)", highlight=False)
        _, history = fit_distributed(cut.top, strategy, stream, validation, n_train, scaling, config,
                                     backup_root / "head", head_epochs, scaling["learning_rate"])
        head_weights = cut.top.get_weights()
        if config.strategy == "fine-tune":
            _save_head(backup_root, history, head_weights)
    head_best_index = best_epoch_index(history["val_loss"], head_epochs)
    details = {
        "strategy": config.strategy, "weights": config.weights or "imagenet", "cut_layer": cut.layer,
        "augment_passes": passes_wanted, "feature_cache_seconds": round(feature_seconds, 1),
        "feature_cache": "per worker: its shard of train/ and all of validation",
        "head_epochs_run": len(history["loss"]), "head_trainable_parameters": head_parameters,
        "best_epoch": head_best_index + 1,
    }
    if config.strategy == "fine-tune":
        # The histories are the chief's numbers on every worker, so every worker decides the same.
        history = fine_tune_phase(
            cut, config, scaling["learning_rate"], history, head_best_index, head_weights, details,
            lambda rate: fit_distributed(cut.top, strategy, stream, validation, n_train, scaling, config,
                                         backup_root / "fine-tune", config.epochs, rate)[1])
    shutil.rmtree(backup_root, ignore_errors=True)
    return history, details
