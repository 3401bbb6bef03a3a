"""Quantization-aware fine-tuning: the int8 simulation matches real TFLite, and the run folder is complete."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgecxr.edge_runtime.errors import EdgecxrError

pytestmark = pytest.mark.slow

SIZE = 64


@pytest.fixture(scope="module")
def lite0_and_images(tiny_kaggle):
    """Lite0 with its real ImageNet weights (realistic BatchNorm statistics) and a seeded head, plus X-rays."""
    import keras

    from edgecxr.edge_runtime.folders import labelled_images
    from edgecxr.edge_runtime.preprocessing import preprocess
    from edgecxr.train.model_specs import get_model_spec
    from edgecxr.train.transfer import build_transfer_model

    keras.utils.set_random_seed(5)
    model = build_transfer_model("efficientnet_lite0", (SIZE, SIZE, 3), "imagenet", seed=5)
    spec = get_model_spec("efficientnet_lite0").preprocess_spec(SIZE, "histogram", 0.0)
    paths = [sample.path for sample in labelled_images(tiny_kaggle / "train")]
    images = np.stack([preprocess(path, spec) for path in paths])
    return model, images


def test_folded_float_path_is_the_model(lite0_and_images):
    from edgecxr.train.quantization_aware import logit_model
    from edgecxr.train.transfer_training import find_cut

    model, images = lite0_and_images
    cut = find_cut(model, "fine-tune", "block6")
    features = np.asarray(cut.bottom(images[:8]))
    folded = 1 / (1 + np.exp(-np.asarray(logit_model(cut.top)(features))[:, 0]))
    np.testing.assert_allclose(folded, np.asarray(model(images[:8]))[:, 0], atol=1e-5)


def test_simulated_int8_tracks_the_real_int8_model(lite0_and_images):
    from edgecxr.train.quantization_aware import Int8Runner, calibrate_ranges, int8_tflite, logit_model
    from edgecxr.train.transfer_training import find_cut

    model, images = lite0_and_images
    calibration, held_out = images[:24], images[24:]
    # A cut low enough that the simulated top holds most of the network's int8 rounding.
    cut = find_cut(model, "fine-tune", "block6")
    real = Int8Runner(int8_tflite(model, calibration))(held_out)[:, 0]
    bottom = Int8Runner(int8_tflite(cut.bottom, calibration))
    ranges = calibrate_ranges(cut.top, np.asarray(cut.bottom(calibration)))
    simulated = 1 / (1 + np.exp(-np.asarray(logit_model(cut.top, ranges)(bottom(held_out)))[:, 0]))
    float_top = 1 / (1 + np.exp(-np.asarray(logit_model(cut.top)(bottom(held_out)))[:, 0]))
    reference = np.asarray(model(held_out))[:, 0]
    drift = np.mean(np.abs(reference - real))
    assert drift > 0.005  # int8 really moves this model, or the comparison below means nothing
    # The simulation reproduces the real int8 outputs better than the float top does (measured: 0.012
    # against 0.023; without the int8 weights it is no better). This tiny 64x64 net does not separate
    # the activation ranges' share; on the 224x224 run the whole simulation tracks int8 to 0.002.
    assert np.mean(np.abs(simulated - real)) < 0.8 * np.mean(np.abs(float_top - real))


@pytest.fixture(scope="module")
def tiny_fine_tuned_run(tiny_kaggle, tmp_path_factory) -> Path:
    from edgecxr.train.hparams import TrainConfig
    from edgecxr.train.trainer import train

    out = tmp_path_factory.mktemp("lite0") / "run"
    return train(TrainConfig(data=tiny_kaggle, out=out, arch="efficientnet_lite0", epochs=1, head_epochs=1,
                             batch_size=16, image_size=SIZE, val_fraction=0.25, seed=3, augment_passes=1,
                             fine_tune_from="block12"))


def _weights(path: Path) -> dict[str, list[np.ndarray]]:
    import keras

    model = keras.models.load_model(path, compile=False)
    return {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in model.layers if layer.get_weights()}


def test_quantization_aware_run_tunes_only_the_top_and_writes_a_complete_run(tiny_fine_tuned_run, tmp_path):
    from edgecxr.edge_runtime.metadata import read_metadata
    from edgecxr.train.quantization_aware import QatConfig
    from edgecxr.train.quantization_aware_run import quantization_aware_run

    out = quantization_aware_run(tiny_fine_tuned_run, tmp_path / "qat",
                                 QatConfig(epochs=2, augment_passes=1, calibration_size=16, learning_rate=1e-3))
    assert {"model.keras", "model.keras.json", "metrics.json", "history.json", "split.json", "roc_val.png",
            "confusion_matrix_val.png"} <= {p.name for p in out.iterdir()}
    assert (out / "split.json").read_bytes() == (tiny_fine_tuned_run / "split.json").read_bytes()
    metadata = read_metadata(out / "model.keras")
    details = metadata.details["quantization_aware"]
    assert details["cut_layer"] == "block12_expand_conv" and len(details["history"]["val_gap"]) == 2
    validation = json.loads((out / "metrics.json").read_text())["validation"]
    assert metadata.threshold == pytest.approx(validation["threshold"])

    before, after = _weights(tiny_fine_tuned_run / "model.keras"), _weights(out / "model.keras")
    changed = {name for name in before if any(not np.array_equal(a, b) for a, b in zip(before[name], after[name]))}
    assert {"block12_expand_conv", "block15_project_conv", "head_conv", "pneumonia"} <= changed
    assert all(name.startswith(("block12", "block13", "block14", "block15", "head_", "pneumonia"))
               for name in changed), changed
    assert not [name for name in changed if name.endswith("_bn")]


def test_only_fine_tuned_transfer_runs_are_accepted(tiny_run, tmp_path):
    from edgecxr.train.quantization_aware import QatConfig
    from edgecxr.train.quantization_aware_run import quantization_aware_run

    with pytest.raises(EdgecxrError, match="not a fine-tuned transfer run"):
        quantization_aware_run(tiny_run, tmp_path / "qat", QatConfig())
    assert not list(tmp_path.iterdir())
