"""Train a model on a Kaggle-layout folder and write a complete run folder."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime import run_folder
from edgecxr.edge_runtime.atomic import atomic_path, write_json_atomic
from edgecxr.edge_runtime.batching import predict_in_batches
from edgecxr.edge_runtime.console import console
from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.folders import LABELS, POSITIVE_LABEL
from edgecxr.edge_runtime.metadata import ModelMetadata, write_metadata
from edgecxr.edge_runtime.metrics import binary_metrics, pick_threshold
from edgecxr.edge_runtime.preprocessing import PreprocessSpec, scale_pixels
from edgecxr.edge_runtime.run_folder import HISTORY_FILE, METRICS_FILE, MODEL_FILE, SPLIT_FILE, TRAINED_FILE
from edgecxr.edge_runtime.versions import package_versions

from . import plots
from .distributed import strategy as distribution
from .distributed.run import fit_under_strategy, train_worker
from .fitting import batches_per_epoch, best_epoch_index, compile_classifier, fit_callbacks
from .hparams import TrainConfig
from .inputs import Splits, load_splits, load_worker_splits, make_datasets, train_dataset, validation_dataset
from .keras_backend import compiled_predict
from .model_specs import get_model_spec
from .transfer_training import check_options as check_transfer_options
from .transfer_training import fit_transfer


def predict_pixels(model, pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Probabilities for uint8 pixels, scaled one memory-sized batch at a time."""
    return predict_in_batches(compiled_predict(model), pixels,
                              prepare=lambda batch: scale_pixels(batch.astype(np.float32), spec))


def check_distillation_options(config: TrainConfig, model_spec) -> None:
    if not config.teachers:
        return
    if model_spec.transfer:
        raise EdgecxrError(f"--teacher trains the compact net only, not --arch {config.arch}")
    if config.distribute != "none":
        raise EdgecxrError("--teacher does not run with --distribute: every worker would score the teachers")
    for teacher in config.teachers:  # before train/ is decoded: a mistyped path fails at once
        run_folder.require_run_folder(Path(teacher))


def fit_distilled(model, splits: Splits, spec: PreprocessSpec, config: TrainConfig) -> tuple[dict, dict]:
    """The compact net on the teachers' answers to warped views of each film (distillation.py)."""
    from edgecxr.edge_runtime.console import progress_bar
    from edgecxr.edge_runtime.folders import LabelledImage

    from .augment import NO_AUGMENTATION
    from .distillation import describe, open_teachers, teacher_views
    from .fitting import image_weights
    from .pixel_cache import PixelSet

    teachers = open_teachers(config.teachers, splits.val.paths)
    samples = [LabelledImage(Path(p), int(label)) for p, label in zip(splits.train.paths, splits.train.labels)]
    with progress_bar() as progress:
        task = progress.add_task(f"{len(teachers)} teacher(s) on {config.teacher_views} views of each film",
                                 total=config.teacher_views * len(samples))
        pixels, targets = teacher_views(teachers, samples, spec, config.teacher_views, config.seed,
                                        lambda n: progress.advance(task, n))
    labels = np.tile(splits.train.labels, config.teacher_views)  # class weights still count true classes
    history = fit_on_targets(model, PixelSet(pixels, targets, [""] * len(targets)), splits.val, spec,
                             replace(config, augment=NO_AUGMENTATION), image_weights(labels, config.class_weights),
                             label_smoothing=0.0, seed=config.seed)
    return history, describe(teachers, config.teacher_views)


def fit_on_targets(model, part, val, spec: PreprocessSpec, config: TrainConfig, weights: np.ndarray,
                   label_smoothing: float, seed: int) -> dict:
    """The compact net fitted on `part`'s targets (labels, or teachers' answers), early-stopped on
    `val`'s true labels; `seed` draws the batches and augmentation. Returns Keras' history."""
    steps = batches_per_epoch(len(part.labels), config.batch_size)
    compile_classifier(model, config.learning_rate, config.epochs * steps, label_smoothing)
    return model.fit(train_dataset(part, spec, config, config.batch_size, seed, weights),
                     validation_data=validation_dataset(val, spec), epochs=config.epochs, verbose=0,
                     callbacks=fit_callbacks(config.epochs, steps, config.patience), shuffle=False).history


def fit(model, model_spec, splits: Splits, spec: PreprocessSpec, config: TrainConfig) -> dict:
    """Train `model` in place; returns the facts the run records (history, time, best epoch)."""
    started = time.perf_counter()
    transfer_details = distillation = None
    if model_spec.transfer:  # ImageNet backbones: strategies in transfer_training.py
        history, transfer_details = fit_transfer(model, splits, spec, config)
    elif config.teachers:
        history, distillation = fit_distilled(model, splits, spec, config)
    else:
        steps = batches_per_epoch(len(splits.train.labels), config.batch_size)
        compile_classifier(model, config.learning_rate, config.epochs * steps, config.label_smoothing)
        train_ds, val_ds = make_datasets(splits, spec, config)
        callbacks = fit_callbacks(config.epochs, steps, config.patience)
        history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, verbose=0,
                            callbacks=callbacks, shuffle=False).history
    train_seconds = time.perf_counter() - started
    history = {k: [float(v) for v in values] for k, values in history.items()}
    best_epoch = (transfer_details["best_epoch"] if transfer_details
                  else best_epoch_index(history["val_loss"], config.epochs) + 1)
    return {"history": history, "train_seconds": train_seconds, "best_epoch": best_epoch,
            "transfer": transfer_details, **({"distillation": distillation} if distillation else {})}


def resume_key(config: TrainConfig) -> dict:
    """What must match between a run and its --resume: everything that decides the weights, as
    JSON gives it back."""
    settings = {k: v for k, v in config.to_dict().items() if k not in ("overwrite", "resume")}
    return json.loads(json.dumps(settings))


def save_trained(model, facts: dict, key: dict, staging: Path) -> None:
    """The trained model and its facts, in the staging folder before anything else can fail."""
    with atomic_path(staging / MODEL_FILE) as tmp:
        model.save(tmp)
    write_json_atomic(staging / TRAINED_FILE, {**facts, "config": key})


def load_trained(config: TrainConfig, key: dict, staging: Path):
    """The model and facts a finished training left in `staging`, if it was the same command."""
    import keras

    record = json.loads((staging / TRAINED_FILE).read_text(encoding="utf-8"))
    wanted, found = key, record.pop("config", {})
    differ = sorted(k for k in set(wanted) | set(found) if wanted.get(k) != found.get(k))
    if differ:
        raise EdgecxrError(f"cannot resume {config.out}: its training used other settings "
                           f"({', '.join(differ)}); run the same command, or drop --resume to retrain")
    return keras.models.load_model(staging / MODEL_FILE, compile=False), record


def train(config: TrainConfig) -> Path:
    """Train, pick the operating threshold on validation, and write the run folder. Returns it."""
    import keras

    config.out = Path(config.out)
    role = distribution.role(config.distribute)
    # Before any worker starts: a bad option must stop them all, not leave the others waiting.
    check_transfer_options(config, get_model_spec(config.arch).transfer)
    check_distillation_options(config, get_model_spec(config.arch))
    if not role.chief and config.resume:
        console.print("--resume: nothing to do on a worker that is not the chief", highlight=False)
        return config.out
    # Before anything else starts TensorFlow; none for --resume, which trains nothing.
    strategy = None if config.resume else distribution.start_strategy(role)
    if not role.chief:
        train_worker(config, role, strategy)
        return config.out
    model_spec = get_model_spec(config.arch)
    spec = model_spec.preprocess_spec(config.image_size, config.equalize, config.crop)
    staging = run_folder.create_staging(config.out, config.overwrite, config.resume)
    key = resume_key(config)
    trained = False
    try:
        keras.utils.set_random_seed(config.seed)
        splits = load_splits(config, spec) if role.workers == 1 else load_worker_splits(config, role, spec)
        for name, part in (("train", splits.train), ("validation", splits.val)):
            if len(set(part.labels.tolist())) < 2:
                raise EdgecxrError(f"the {name} split has only one class; add images of both classes")
        skipped = len(splits.train.skipped) + len(splits.val.skipped)
        train_labels = splits.train.labels if splits.all_train_labels is None else splits.all_train_labels
        console.print(
            f"train {len(splits.train_paths)} images ({np.bincount(train_labels, minlength=2).tolist()} "
            f"NORMAL/PNEUMONIA), validation {len(splits.val.labels)} from {splits.source}; "
            f"{skipped} file(s) skipped", highlight=False)

        if config.resume:
            model, facts = load_trained(config, key, staging)
            console.print(f"resuming from the model trained in {staging}", highlight=False)
        else:
            if strategy is None:
                model = model_spec.build(spec.input_shape, seed=config.seed, weights=config.weights)
                facts = fit(model, model_spec, splits, spec, config)
            else:
                model, facts = fit_under_strategy(model_spec, strategy, role, splits, spec, config)
            save_trained(model, facts, key, staging)
        trained = True
        history, train_seconds = facts["history"], facts["train_seconds"]
        best_epoch, transfer_details = facts["best_epoch"], facts["transfer"]

        val_probs = predict_pixels(model, splits.val.pixels, spec)
        threshold = pick_threshold(splits.val.labels, val_probs, config.target_sensitivity)
        val_metrics = binary_metrics(splits.val.labels, val_probs, threshold)

        model_path = staging / MODEL_FILE
        metadata = ModelMetadata(
            labels=list(LABELS), positive_label=POSITIVE_LABEL, threshold=threshold, preprocessing=spec,
            format="keras", quantization="none", arch=config.arch,
            details={
                "parameters": int(model.count_params()),
                "threshold_rule": f"highest threshold with validation sensitivity >= {config.target_sensitivity}",
                "training": {
                    "config": config.to_dict(), "validation_source": splits.source,
                    "n_train": len(splits.train_paths), "n_val": int(len(splits.val.labels)),
                    "epochs_run": len(history["loss"]), "best_epoch": best_epoch,
                    "train_seconds": round(train_seconds, 1),
                },
                "versions": package_versions(),
                **({"transfer": transfer_details} if transfer_details else {}),
                **({"distribution": facts["distribution"]} if facts.get("distribution") else {}),
                **({"distillation": facts["distillation"]} if facts.get("distillation") else {}),
            },
        )
        write_metadata(model_path, metadata)
        write_json_atomic(staging / HISTORY_FILE, history)
        write_json_atomic(staging / METRICS_FILE, {
            "validation": val_metrics,
            "validation_source": splits.source,
            "n_train": len(splits.train_paths),
            "n_val": int(len(splits.val.labels)),
            "skipped": [{"path": p, "reason": r} for p, r in splits.train.skipped + splits.val.skipped],
            "epochs_run": len(history["loss"]),
            "best_epoch": best_epoch,
            "train_seconds": round(train_seconds, 1),
        })
        # Absolute paths: convert and bench read this file from wherever they are run.
        write_json_atomic(staging / SPLIT_FILE, {
            "source": splits.source,
            "train": [str(Path(p).resolve()) for p in splits.train_paths],
            "validation": [str(Path(p).resolve()) for p in splits.val.paths]})
        plots.plot_history(history, staging / "training_curves.png")
        plots.plot_confusion_matrix(val_metrics["confusion_matrix"], LABELS, staging / "confusion_matrix_val.png",
                                    f"validation (threshold {threshold:.3f})")
        plots.plot_roc(splits.val.labels, val_probs, threshold, staging / "roc_val.png", "validation ROC")
        (staging / TRAINED_FILE).unlink()
        run_folder.publish(staging, config.out)
    except BaseException:
        if trained or config.resume:  # never throw away finished training
            console.print(f"[yellow]the trained model is kept in {staging}[/yellow]: finish this run with the "
                          f"same command and --resume (no retraining)", highlight=False)
        else:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    console.print(
        f"[green]trained[/green] {config.arch} in {train_seconds:.0f}s ({len(history['loss'])} epochs, best "
        f"{best_epoch}); validation accuracy {val_metrics['accuracy']:.3f}, AUC {val_metrics['roc_auc']:.3f}, "
        f"sensitivity {val_metrics['sensitivity']:.3f}, specificity {val_metrics['specificity']:.3f} at "
        f"threshold {threshold:.3f} -> {config.out}", highlight=False)
    return config.out
