"""Train a model on a Kaggle-layout folder and write a complete run folder."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.atomic import atomic_path, write_json_atomic
from edgecxr.edge_runtime.console import console
from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.folders import LABELS, POSITIVE_LABEL, labelled_images
from edgecxr.edge_runtime.metadata import ModelMetadata, write_metadata
from edgecxr.edge_runtime.metrics import binary_metrics, pick_threshold
from edgecxr.edge_runtime.preprocessing import PreprocessSpec, scale_pixels
from edgecxr.edge_runtime.versions import package_versions

from . import plots
from .augment import augment_batch
from .dataset import find_splits, official_val_usable, split_by_patient
from .fitting import batches_per_epoch, best_epoch_index, compile_classifier, fit_callbacks, image_weights
from .hparams import TrainConfig
from .model_specs import get_model_spec
from .pixel_cache import PixelSet, load_pixels
from .transfer_training import check_options as check_transfer_options
from .transfer_training import fit_transfer

MODEL_FILE = "model.keras"


@dataclass
class Splits:
    train: PixelSet
    val: PixelSet
    source: str


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


def make_datasets(splits: Splits, spec: PreprocessSpec, config: TrainConfig):
    """Batched (train, validation) datasets; train batches carry each image's class weight."""
    import tensorflow as tf

    labels = splits.train.labels
    weights = image_weights(labels, config.class_weights)

    def prepare_train(batch, seed):
        pixels, labels, weights = batch
        x = tf.cast(pixels, tf.float32)
        y = tf.cast(labels, tf.float32)[:, None]
        if config.augment.enabled:
            x = augment_batch(x, seed, config.augment)
        return scale_pixels(x, spec), y, weights

    def prepare_val(pixels, labels):
        return scale_pixels(tf.cast(pixels, tf.float32), spec), tf.cast(labels, tf.float32)[:, None]

    # One stateless seed per batch, drawn from the run's seed: augmentation repeats exactly.
    batch_seeds = tf.data.Dataset.random(seed=config.seed).batch(2)
    train = (tf.data.Dataset.from_tensor_slices((splits.train.pixels, labels, weights))
             .shuffle(len(splits.train.labels), seed=config.seed, reshuffle_each_iteration=True)
             .batch(config.batch_size))
    train = (tf.data.Dataset.zip((train, batch_seeds))
             .map(prepare_train, num_parallel_calls=tf.data.AUTOTUNE)
             .prefetch(tf.data.AUTOTUNE))
    val = (tf.data.Dataset.from_tensor_slices((splits.val.pixels, splits.val.labels))
           .batch(256)
           .map(prepare_val)
           .cache())
    return train, val


def predict_pixels(model, pixels: np.ndarray, spec: PreprocessSpec, batch_size: int = 256) -> np.ndarray:
    outputs = []
    for start in range(0, len(pixels), batch_size):
        batch = scale_pixels(pixels[start:start + batch_size].astype(np.float32), spec)
        outputs.append(np.asarray(model(batch, training=False)).reshape(-1))
    return np.concatenate(outputs).astype(np.float64)


def prepare_run_folder(out: Path, overwrite: bool) -> Path:
    """A fresh staging folder; the run appears at `out` only once everything is written."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise EdgecxrError(f"run folder {out} already exists; pick another --out or pass --overwrite")
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
    except OSError as exc:  # found now, not after minutes of training
        raise EdgecxrError(f"cannot create the run folder {out}: {exc.strerror or exc}") from exc
    return staging


def publish_run_folder(staging: Path, out: Path) -> None:
    if out.exists():
        retired = out.with_name(f".{out.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        out.rename(retired)
        staging.rename(out)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(out)


def train(config: TrainConfig) -> Path:
    """Train, pick the operating threshold on validation, and write the run folder. Returns it."""
    import keras

    model_spec = get_model_spec(config.arch)
    spec = model_spec.preprocess_spec(config.image_size, config.equalize, config.crop)
    config.out = Path(config.out)
    staging = prepare_run_folder(config.out, config.overwrite)
    try:
        keras.utils.set_random_seed(config.seed)
        splits = load_splits(config, spec)
        for name, part in (("train", splits.train), ("validation", splits.val)):
            if len(set(part.labels.tolist())) < 2:
                raise EdgecxrError(f"the {name} split has only one class; add images of both classes")
        skipped = len(splits.train.skipped) + len(splits.val.skipped)
        console.print(
            f"train {len(splits.train.labels)} images ({np.bincount(splits.train.labels, minlength=2).tolist()} "
            f"NORMAL/PNEUMONIA), validation {len(splits.val.labels)} from {splits.source}; "
            f"{skipped} file(s) skipped", highlight=False)

        check_transfer_options(config, model_spec.transfer)
        model = model_spec.build(spec.input_shape, seed=config.seed, weights=config.weights)
        transfer_details = None
        if model_spec.transfer:  # ImageNet backbones: strategies in transfer_training.py
            started = time.perf_counter()
            history, transfer_details = fit_transfer(model, splits, spec, config)
        else:
            steps = batches_per_epoch(len(splits.train.labels), config.batch_size)
            compile_classifier(model, config.learning_rate, config.epochs * steps, config.label_smoothing)
            train_ds, val_ds = make_datasets(splits, spec, config)
            callbacks = fit_callbacks(config.epochs, steps, config.patience)
            started = time.perf_counter()
            history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, verbose=0,
                                callbacks=callbacks, shuffle=False).history
        train_seconds = time.perf_counter() - started
        history = {k: [float(v) for v in values] for k, values in history.items()}

        val_probs = predict_pixels(model, splits.val.pixels, spec)
        threshold = pick_threshold(splits.val.labels, val_probs, config.target_sensitivity)
        val_metrics = binary_metrics(splits.val.labels, val_probs, threshold)
        best_epoch = (transfer_details["best_epoch"] if transfer_details
                      else best_epoch_index(history["val_loss"], config.epochs) + 1)

        model_path = staging / MODEL_FILE
        with atomic_path(model_path) as tmp:
            model.save(tmp)
        metadata = ModelMetadata(
            labels=list(LABELS), positive_label=POSITIVE_LABEL, threshold=threshold, preprocessing=spec,
            format="keras", quantization="none", arch=config.arch,
            details={
                "parameters": int(model.count_params()),
                "threshold_rule": f"highest threshold with validation sensitivity >= {config.target_sensitivity}",
                "training": {
                    "config": config.to_dict(), "validation_source": splits.source,
                    "n_train": int(len(splits.train.labels)), "n_val": int(len(splits.val.labels)),
                    "epochs_run": len(history["loss"]), "best_epoch": best_epoch,
                    "train_seconds": round(train_seconds, 1),
                },
                "versions": package_versions(),
                **({"transfer": transfer_details} if transfer_details else {}),
            },
        )
        write_metadata(model_path, metadata)
        write_json_atomic(staging / "history.json", history)
        write_json_atomic(staging / "metrics.json", {
            "validation": val_metrics,
            "validation_source": splits.source,
            "n_train": int(len(splits.train.labels)),
            "n_val": int(len(splits.val.labels)),
            "skipped": [{"path": p, "reason": r} for p, r in splits.train.skipped + splits.val.skipped],
            "epochs_run": len(history["loss"]),
            "best_epoch": best_epoch,
            "train_seconds": round(train_seconds, 1),
        })
        # Absolute paths: convert and bench read this file from wherever they are run.
        write_json_atomic(staging / "split.json", {
            "source": splits.source,
            "train": [str(Path(p).resolve()) for p in splits.train.paths],
            "validation": [str(Path(p).resolve()) for p in splits.val.paths]})
        plots.plot_history(history, staging / "training_curves.png")
        plots.plot_confusion_matrix(val_metrics["confusion_matrix"], LABELS, staging / "confusion_matrix_val.png",
                                    f"validation (threshold {threshold:.3f})")
        plots.plot_roc(splits.val.labels, val_probs, threshold, staging / "roc_val.png", "validation ROC")
        publish_run_folder(staging, config.out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    console.print(
        f"[green]trained[/green] {config.arch} in {train_seconds:.0f}s ({len(history['loss'])} epochs, best "
        f"{best_epoch}); validation accuracy {val_metrics['accuracy']:.3f}, AUC {val_metrics['roc_auc']:.3f}, "
        f"sensitivity {val_metrics['sensitivity']:.3f}, specificity {val_metrics['specificity']:.3f} at "
        f"threshold {threshold:.3f} -> {config.out}", highlight=False)
    return config.out
