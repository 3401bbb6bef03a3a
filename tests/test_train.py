"""A tiny real training run, evaluation, and the CLI's errors."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgecxr.edge_runtime.metadata import read_metadata
from edgecxr.edge_runtime.metrics import binary_metrics
from edgecxr.train.dataset import patient_id
from edgecxr.edge_runtime.python_command import python_module

RUN_FILES = {"model.keras", "model.keras.json", "history.json", "metrics.json", "split.json",
             "training_curves.png", "confusion_matrix_val.png", "roc_val.png"}


def run_cli(*args, env=None, cwd=None):
    return subprocess.run([*python_module("edgecxr.cli"), *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=600)


def test_tiny_run_writes_every_file(tiny_run):
    assert RUN_FILES <= {p.name for p in tiny_run.iterdir()}
    assert not list(tiny_run.parent.glob(".*partial*"))
    metadata = read_metadata(tiny_run / "model.keras")  # sha256 checked
    assert metadata.labels == ["NORMAL", "PNEUMONIA"] and metadata.positive_label == "PNEUMONIA"
    assert metadata.preprocessing.height == 64 and metadata.preprocessing.channels == 1
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["validation"]["threshold"] == pytest.approx(metadata.threshold)
    assert metrics["validation"]["sensitivity"] >= 0.95  # the threshold rule on validation
    split = json.loads((tiny_run / "split.json").read_text())
    train_patients = {patient_id(Path(p)) for p in split["train"]}
    assert not train_patients & {patient_id(Path(p)) for p in split["validation"]}
    history = json.loads((tiny_run / "history.json").read_text())
    assert {"loss", "val_loss", "accuracy", "val_auc"} <= set(history)


def test_evaluate_matches_metrics_recomputed_from_the_model(tiny_run, tiny_kaggle, tmp_path):
    out = tmp_path / "eval.json"
    result = run_cli("evaluate", tiny_run, "--data", tiny_kaggle, "--json", out, "--plots", tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    for key in ("accuracy", "precision", "sensitivity", "specificity", "f1", "roc_auc", "threshold",
                "n_images", "confusion_matrix"):
        assert key in report
    assert report["n_images"] == 24 and report["data"].endswith("test")
    assert (tmp_path / "confusion_matrix_test.png").stat().st_size > 1000
    # Independently: the Keras model on the same images at the stored threshold.
    from edgecxr.edge_runtime.folders import labelled_images
    from edgecxr.edge_runtime.preprocessing import preprocess
    from edgecxr.train.keras_backend import KerasBackend

    backend = KerasBackend(tiny_run / "model.keras")
    samples = labelled_images(tiny_kaggle / "test")
    inputs = np.stack([preprocess(s.path, backend.metadata.preprocessing) for s in samples])
    expected = binary_metrics([s.label for s in samples], backend.predict_proba(inputs), backend.metadata.threshold)
    assert report["confusion_matrix"] == expected["confusion_matrix"]
    assert report["roc_auc"] == pytest.approx(expected["roc_auc"])


def test_same_seed_reproduces_the_split_and_metrics(tiny_kaggle, tiny_run, tmp_path):
    from edgecxr.train.hparams import TrainConfig
    from edgecxr.train.trainer import train

    again = train(TrainConfig(data=tiny_kaggle, out=tmp_path / "again", epochs=1, batch_size=16,
                              val_fraction=0.25, seed=1))
    first = json.loads((tiny_run / "split.json").read_text())
    second = json.loads((again / "split.json").read_text())
    assert first["validation"] == second["validation"]
    m1 = json.loads((tiny_run / "metrics.json").read_text())["validation"]
    m2 = json.loads((again / "metrics.json").read_text())["validation"]
    assert abs(m1["accuracy"] - m2["accuracy"]) <= 0.005
    assert abs(m1["roc_auc"] - m2["roc_auc"]) <= 0.005


def test_missing_data_is_one_clear_line(tmp_path):
    env = {"EDGECXR_DATA": str(tmp_path / "nowhere")}
    # From an empty folder so ../shared/data and data/ defaults do not exist either.
    result = run_cli("train", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "no data folder found" in result.stderr and "train/{NORMAL,PNEUMONIA}" in result.stderr
    assert "kaggle.com" in result.stderr


def test_existing_run_folder_is_not_overwritten_by_accident(tiny_run, tiny_kaggle):
    before = (tiny_run / "model.keras").read_bytes()
    result = run_cli("train", "--data", tiny_kaggle, "--out", tiny_run, "--epochs", "1")
    assert result.returncode == 2 and "already exists" in result.stderr
    assert (tiny_run / "model.keras").read_bytes() == before


def test_an_unwritable_run_folder_is_one_line_before_any_work(tiny_kaggle, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli("train", "--data", tiny_kaggle, "--out", blocker / "run", "--epochs", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"cannot create the run folder {blocker / 'run'}" in result.stderr
    assert "decod" not in result.stderr.lower() and "validation" not in result.stderr


def test_crop_and_augmentation_options_reach_the_metadata_and_nonsense_is_refused(tiny_kaggle, tmp_path):
    from edgecxr.edge_runtime.metadata import read_metadata

    out = tmp_path / "cropped"
    result = run_cli("train", "--data", tiny_kaggle, "--out", out, "--epochs", "1", "--batch-size", "16",
                     "--val-fraction", "0.25", "--seed", "1", "--crop", "0.1", "--zoom", "0.2",
                     "--frame-area", "0.3", "--frame-aspect", "0.15", "--gamma", "0.2")
    assert result.returncode == 0, result.stderr
    metadata = read_metadata(out / "model.keras")
    assert metadata.preprocessing.crop == 0.1
    augment = metadata.details["training"]["config"]["augment"]
    assert augment["zoom"] == 0.2
    # The framing crop and gamma run inside the real tf.data pipeline, and the run says it used them.
    assert (augment["frame_area"], augment["frame_aspect"], augment["gamma"]) == (0.3, 0.15, 0.2)
    refused = run_cli("train", "--data", tiny_kaggle, "--out", tmp_path / "no", "--crop", "0.3")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and "--crop" in refused.stderr
    assert not (tmp_path / "no").exists()


def test_train_batches_carry_class_weights(tmp_path):
    """The compact pipeline on synthetic pixels: hard targets and each image's class weight
    (NORMAL 2.0, PNEUMONIA 2/3 here)."""
    from edgecxr.edge_runtime.preprocessing import PreprocessSpec
    from edgecxr.train.augment import NO_AUGMENTATION
    from edgecxr.train.hparams import TrainConfig
    from edgecxr.train.pixel_cache import PixelSet
    from edgecxr.train.trainer import Splits, make_datasets

    labels = np.array([0] * 16 + [1] * 48)
    pixels = np.repeat(labels * 255, 8 * 8).reshape(-1, 8, 8, 1).astype(np.uint8)
    part = PixelSet(pixels, labels, [f"{i}.png" for i in range(len(labels))])
    spec = PreprocessSpec(height=8, width=8)

    config = TrainConfig(data=tmp_path, out=tmp_path, batch_size=64, augment=NO_AUGMENTATION)
    train, _ = make_datasets(Splits(part, part, "test"), spec, config)
    x, y, w = [np.asarray(t) for t in next(iter(train))]
    assert set(y.ravel()) == {0.0, 1.0} and np.allclose(w, np.where(y.ravel() == 1, 2 / 3, 2.0))
    assert np.allclose(x[:, 0, 0, 0], y.ravel())  # pixels stay with their own label: 255 or 0, scaled by 1/255


def test_early_stopping_neither_stops_nor_keeps_weights_in_the_first_half_of_the_schedule():
    import keras

    from edgecxr.train.fitting import best_epoch_index, fit_callbacks

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    stopper = next(c for c in fit_callbacks(epochs=8, steps=1, patience=3)
                   if isinstance(c, keras.callbacks.EarlyStopping))
    stopper.set_model(model)
    model.stop_training = False  # what fit() sets before the first epoch
    # A lucky first epoch, then the jumps of the high-rate start: patience alone stops at epoch 4
    # and keeps epoch 1's weights.
    val_losses = [0.2, 0.9, 0.9, 0.9, 0.5, 0.4, 0.45, 0.6]
    stopper.on_train_begin()
    for epoch, loss in enumerate(val_losses):
        model.set_weights([np.full(w.shape, epoch, dtype=np.float32) for w in model.get_weights()])
        stopper.on_epoch_end(epoch, {"val_loss": loss})
        assert not model.stop_training, f"stopped after epoch {epoch + 1}"
    stopper.on_train_end()
    assert float(model.get_weights()[0][0, 0]) == 5  # the best of the second half, epoch 6
    assert best_epoch_index(val_losses, epochs=8) == 5
    assert best_epoch_index([0.2, 0.9], epochs=8) == 1  # stopped short of the second half: its last epoch
