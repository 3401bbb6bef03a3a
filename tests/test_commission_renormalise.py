"""`edgecxr commission --renormalise RUN`: BatchNorm statistics re-estimated on a site's real X-rays,
the model re-exported and re-verified in its own format; the original never changes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli_runner import run_cli
from edge_artifacts import edge_artifacts, write_resealed
from edgecxr.edge_runtime.metadata import metadata_path, read_metadata, sha256_file
from edgecxr.edge_runtime.preprocessing import scale_pixels
from edgecxr.edge_runtime.folders import labelled_images
from edgecxr.train.pixel_cache import load_pixels

pytestmark = pytest.mark.slow


def site_inputs(folder: Path, spec) -> np.ndarray:
    pixels = load_pixels(labelled_images(folder), spec, use_cache=False).pixels
    return scale_pixels(pixels.astype(np.float32), spec)


def bn_inputs(model, layer, inputs: np.ndarray) -> np.ndarray:
    import keras

    probe = keras.Model(model.inputs, layer.input)
    values = np.asarray(probe.predict_on_batch(inputs), dtype=np.float64)
    return values.reshape(-1, values.shape[-1])


# --- the re-estimation itself ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras_model_and_inputs(tiny_run, tiny_kaggle):
    import keras

    model = keras.models.load_model(tiny_run / "model.keras", compile=False)
    spec = read_metadata(tiny_run / "model.keras").preprocessing
    return model, site_inputs(tiny_kaggle / "test", spec)


def test_one_batch_gives_every_layer_exactly_its_inputs_statistics(keras_model_and_inputs):
    """The whole set as one batch is the exact answer: in inference mode afterwards, every BatchNorm
    layer's moving mean and variance are the mean and variance of what reaches it."""
    from edgecxr.train.batchnorm_reestimation import batchnorm_layers, renormalise

    model, inputs = keras_model_and_inputs
    layers = batchnorm_layers(model)
    before = [layer.moving_mean.numpy() for layer in layers]
    flags = [(layer.trainable, layer.momentum) for layer in layers]
    stats = renormalise(model, inputs, batch_size=len(inputs))
    assert stats.layers == len(layers) == 6 and stats.images == len(inputs) == 24
    assert stats.largest_mean_shift > 0
    for layer, old in zip(layers, before):
        seen = bn_inputs(model, layer, inputs)
        np.testing.assert_allclose(layer.moving_mean, seen.mean(axis=0), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(layer.moving_variance, seen.var(axis=0), rtol=2e-3, atol=1e-4)
        assert not np.allclose(layer.moving_mean, old)
    assert [(layer.trainable, layer.momentum) for layer in layers] == flags


def test_batches_pool_to_the_first_layers_exact_statistics(keras_model_and_inputs):
    """Batched, the first layer (nothing normalised before it) is still exact, and deeper ones close."""
    from edgecxr.train.batchnorm_reestimation import batchnorm_layers, renormalise

    model, inputs = keras_model_and_inputs
    layers = batchnorm_layers(model)
    renormalise(model, inputs, batch_size=8)
    seen = bn_inputs(model, layers[0], inputs)
    np.testing.assert_allclose(layers[0].moving_mean, seen.mean(axis=0), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(layers[0].moving_variance, seen.var(axis=0), rtol=2e-3, atol=1e-4)
    last = bn_inputs(model, layers[-1], inputs)
    scale = np.sqrt(last.var(axis=0)) + 1e-3
    assert np.max(np.abs(np.asarray(layers[-1].moving_mean) - last.mean(axis=0)) / scale) < 0.5


def test_pretrained_frozen_statistics_are_not_re_estimated(tiny_run):
    from edgecxr.convert.site_reexport import pretrained_statistics

    metadata = read_metadata(tiny_run / "model.keras")
    assert pretrained_statistics(metadata) is None  # trained from scratch: its statistics are its images'
    metadata.details = {**metadata.details, "transfer": {"strategy": "fine-tune", "weights": "imagenet"}}
    assert "pretrained imagenet weights'" in pretrained_statistics(metadata)
    metadata.details["transfer"]["weights"] = "none"  # a backbone trained from scratch
    assert pretrained_statistics(metadata) is None


def test_a_model_without_batchnorm_is_refused():
    import keras

    from edgecxr.train.batchnorm_reestimation import NoBatchNorm, renormalise

    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(inputs))))
    with pytest.raises(NoBatchNorm, match="no BatchNormalization layer"):
        renormalise(model, np.zeros((4, 8, 8, 1), np.float32))


# --- the command -----------------------------------------------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def site(data_root, tmp_path_factory) -> Path:
    """A clinic's labelled films: 40 real test/ X-rays of each class (the tiny run never saw test/)."""
    root = tmp_path_factory.mktemp("renorm_site") / "clinic-r"
    for label in ("NORMAL", "PNEUMONIA"):
        (root / label).mkdir(parents=True)
        for path in sorted((data_root / "test" / label).iterdir())[-40:]:
            shutil.copy(path, root / label / path.name)
    return root


def model_copy(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, folder / source.name)
    shutil.copy(metadata_path(source), metadata_path(folder / source.name))
    return folder / source.name


@pytest.mark.parametrize("artifact", ["int8.tflite", "int8.onnx"])
def test_renormalise_rebuilds_the_model_in_its_format_and_leaves_the_original_alone(
        artifact, tiny_run, site, tmp_path, monkeypatch, capsys):
    model = model_copy(edge_artifacts(tiny_run)[artifact], tmp_path / "models")
    run_files = {path: digest(path) for path in tiny_run.rglob("*") if path.is_file()}
    before = {path: digest(path) for path in (model, metadata_path(model))}
    report = tmp_path / "record.json"
    code, _, err = run_cli(monkeypatch, capsys, "commission", model, site, "--renormalise", tiny_run,
                           "--json", report)
    assert code == 0, err
    assert {path: digest(path) for path in before} == before
    assert {path: digest(path) for path in run_files} == run_files

    new = model.with_name(f"model_int8.site-clinic-r{model.suffix}")
    metadata = read_metadata(new)
    assert metadata.sha256 == sha256_file(new) and new.read_bytes() != model.read_bytes()
    assert (metadata.format, metadata.quantization) == (read_metadata(model).format, "int8")
    record = metadata.commissioning
    assert record["renormalised"] is True and record["source_sha256"] == before[model]
    renormalisation = record["renormalisation"]
    assert renormalisation["images"] == 80 and renormalisation["layers"] == 6
    assert renormalisation["run_model_sha256"] == read_metadata(tiny_run / "model.keras").sha256
    assert renormalisation["calibration"]["source"].startswith("site images")
    assert renormalisation["calibration"]["per_class"] == "not used"
    assert renormalisation["verification"]["agreement"] >= 0.98
    verified_on = renormalisation["verification"]["images"]
    assert verified_on["source"].startswith("site images (verification") and verified_on["n_images"] == 40
    assert renormalisation["calibration"]["n_images"] == 40  # the other half: none in both
    assert metadata.details["verification"]["agreement"] == renormalisation["verification"]["agreement"]
    assert record["images"] == {"NORMAL": 40, "PNEUMONIA": 40}
    assert record["previous_threshold"] == read_metadata(model).threshold
    assert "before_renormalisation_at_previous_threshold" in record
    assert "BatchNorm statistics re-estimated on 80" in " ".join(err.split())
    assert json.loads(report.read_text())["commissioning"] == record
    assert not [p for p in model.parent.iterdir() if p.name.startswith(".edgecxr-renormalise-")]

    # The new model runs and says whose threshold it carries.
    code, out, err = run_cli(monkeypatch, capsys, "predict", new, site / "PNEUMONIA", "--json")
    assert code == 0 and "commissioned for site clinic-r" in err
    assert {json.loads(line)["threshold"] for line in out.splitlines()} == {metadata.threshold}

    # Commissioned again from its rebuild: the run still matches it.
    code, _, err = run_cli(monkeypatch, capsys, "commission", new, site, "--site", "clinic-s", "--renormalise",
                           tiny_run)
    assert code == 0, err
    assert read_metadata(new.with_name(f"model_int8.site-clinic-s{model.suffix}")).commissioning["renormalised"]


def one_line_error(code: int, err: str, expected: str) -> None:
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert expected in err, err


def test_a_model_from_another_run_is_refused_and_nothing_is_written(tiny_run, site, tmp_path, monkeypatch, capsys):
    model = model_copy(edge_artifacts(tiny_run)["int8.tflite"], tmp_path / "models")
    data = json.loads(metadata_path(model).read_text())
    data["details"]["source_sha256"] = "0" * 64  # exported from some other model.keras
    write_resealed(model, data)
    code, _, err = run_cli(monkeypatch, capsys, "commission", model, site, "--renormalise", tiny_run)
    one_line_error(code, err, "was not exported from this run's model.keras")
    assert sorted(p.name for p in model.parent.iterdir()) == ["model_int8.tflite", "model_int8.tflite.json"]

    code, _, err = run_cli(monkeypatch, capsys, "commission", model, site, "--renormalise", tmp_path / "nowhere")
    one_line_error(code, err, "run folder not found")
