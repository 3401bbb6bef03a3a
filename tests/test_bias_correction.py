"""Logit bias correction of int8 artifacts: the measurement, the shifted copy, and real conversions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecxr.convert.bias_correction import (MIN_IMAGES, convolution_input_means, layer_corrected_copy, logit_gap,
                                            logit_shifted_copy, rounded_per_channel)
from edgecxr.convert.calibration import calibration_set, verification_set
from edgecxr.convert.exporter import ConvertOptions, convert_run
from edgecxr.edge_runtime.metrics import log_odds
from edgecxr.edge_runtime.run_folder import RunFolder
from edgecxr.edge_runtime.backends import open_backend
from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.metadata import read_metadata, sha256_file, write_metadata
from edgecxr.edge_runtime.python_command import python_module

pytestmark = pytest.mark.numeric


def sigmoid(z):
    return 1 / (1 + np.exp(-np.asarray(z, dtype=np.float64)))


def test_logit_gap_is_the_mean_shift_of_unsaturated_images():
    reference = sigmoid(np.linspace(-3, 3, 50))
    gap = logit_gap(reference, sigmoid(log_odds(reference) - 0.2))
    assert gap.mean == pytest.approx(-0.2, abs=1e-6) and gap.n_images == 50
    # Saturated images (here with a wildly different logit) are left out of the measurement.
    saturated = np.concatenate([reference, [0.9999, 0.00001]])
    shifted = np.concatenate([sigmoid(log_odds(reference) - 0.2), [0.5, 0.5]])
    assert logit_gap(saturated, shifted).mean == pytest.approx(-0.2, abs=1e-6)
    too_few = logit_gap(reference[:MIN_IMAGES - 1], reference[:MIN_IMAGES - 1])
    assert too_few.mean is None and too_few.describe()["applied"] is False


def small_sigmoid_model(activation: str = "sigmoid", units: int = 1):
    import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(units, activation=activation)(x))


def test_shifted_copy_moves_only_the_logit_and_leaves_the_model_alone():
    import keras

    keras.utils.set_random_seed(0)
    model = small_sigmoid_model()
    images = np.random.default_rng(0).random((6, 8, 8, 1)).astype(np.float32)
    before = np.asarray(model(images)).ravel()
    copy = logit_shifted_copy(model, 0.3)
    assert np.allclose(log_odds(np.asarray(copy(images)).ravel()), log_odds(before) + 0.3, atol=1e-4)
    assert np.array_equal(np.asarray(model(images)).ravel(), before)


@pytest.mark.parametrize("activation,units", [("linear", 1), ("softmax", 2)])
def test_a_model_without_one_sigmoid_unit_is_refused_clearly(activation, units):
    with pytest.raises(EdgecxrError, match="--no-bias-correction") as raised:
        logit_shifted_copy(small_sigmoid_model(activation, units), 0.1)
    assert "\n" not in str(raised.value)


def rounding_model(calibration_inputs: np.ndarray):
    """A model whose int8 logit is low for a known reason.

    The logit is a weighted sum of the 64 regional brightnesses of an 8x8 grid. One region, the one
    that varies most between images, carries a weight big enough to spread the logits over about
    +-1; it sets the dense layer's int8 scale to weight/127. Every other weight is 0.43 of that
    step, so int8 rounds them all to zero and drops their (positive) share from every logit. The
    bias centres the Keras probabilities near 0.5.
    """
    import keras

    inputs = keras.Input((64, 64, 1))
    regions = keras.layers.Flatten()(keras.layers.AveragePooling2D(8)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="pneumonia")(regions))
    brightness = np.asarray(keras.Model(inputs, regions)(calibration_inputs))
    varied = int(np.argmax(brightness.std(axis=0)))
    big = 1.0 / float(brightness[:, varied].std())
    dense = np.full((brightness.shape[1], 1), 0.43 * big / 127, np.float32)
    dense[varied] = big
    logit = brightness @ dense
    model.get_layer("pneumonia").set_weights([dense, -np.full(1, logit.mean(), np.float32)])
    return model


@pytest.fixture(scope="module")
def rounding_run(tiny_run, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "rounding"
    shutil.copytree(tiny_run, run)
    metadata = read_metadata(run / "model.keras")
    model = rounding_model(calibration_set(RunFolder.open(run), 40, 42).inputs[:])
    model.save(run / "model.keras")
    metadata.threshold = 0.5
    write_metadata(run / "model.keras", metadata)
    return run


def compared_with_keras(artifact: Path, run: Path) -> tuple[float, float]:
    """(mean int8-minus-Keras logit, label agreement) on the verification images, none used for calibration."""
    import keras

    images = verification_set(RunFolder.open(run), 500, 42).inputs[:]
    reference = np.asarray(keras.models.load_model(run / "model.keras", compile=False)(images)).ravel()
    probs = open_backend(artifact).predict_proba(images)
    return float(np.mean(log_odds(probs) - log_odds(reference))), float(np.mean((probs >= 0.5) == (reference >= 0.5)))


@pytest.mark.slow
def test_bias_correction_removes_a_systematic_int8_shift_in_both_formats(rounding_run, tmp_path):
    sha_before = sha256_file(rounding_run / "model.keras")
    plain, corrected = tmp_path / "plain", tmp_path / "corrected"
    # Verification would refuse the uncorrected models (a quarter of the labels flip); the
    # comparison below is made on the same images.
    for out, correct in ((plain, False), (corrected, True)):
        results = convert_run(ConvertOptions(run=rounding_run, quantize="int8", format="all", calibration_size=40,
                                             out=out, bias_correction="logit" if correct else "off",
                                             verify=False))
        assert [r.status for r in results] == ["unverified"] * len(results), [r.error for r in results]
        assert [r.bias_correction is not None for r in results] == [
            correct and r.quantization == "int8" for r in results]
    for name in ("model_int8.tflite", "model_int8.onnx"):
        (gap_before, agree_before), (gap_after, agree_after) = (compared_with_keras(folder / name, rounding_run)
                                                                for folder in (plain, corrected))
        assert gap_before < -0.1, (name, gap_before)  # the known rounding loss is there without correction
        assert abs(gap_after) < 0.2 * abs(gap_before), (name, gap_before, gap_after)
        assert agree_after > agree_before, (name, agree_before, agree_after)
        applied = read_metadata(corrected / name).details["bias_correction"]
        assert applied["applied"] is True and applied["logit_shift"] > 0.1
        assert "bias_correction" not in read_metadata(plain / name).details
    # The float artifacts are never corrected, and the Keras model is untouched.
    assert "bias_correction" not in read_metadata(corrected / "model_fp32.tflite").details
    assert sha256_file(rounding_run / "model.keras") == sha_before


@pytest.mark.slow
def test_cli_flag_corrects_int8_and_says_by_how_much(rounding_run, tmp_path):
    import os
    import subprocess

    done = subprocess.run([*python_module("edgecxr.cli"), "convert", str(rounding_run), "--format", "tflite",
                           "--bias-correction", "logit", "--no-verify", "--calibration-size", "40", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stdout + done.stderr
    said = " ".join(done.stderr.split())  # rich wraps long lines; the console writes to stderr
    shift = read_metadata(tmp_path / "model_int8.tflite").details["bias_correction"]["logit_shift"]
    assert shift > 0.1 and f"model_int8.tflite: int8 logit shifted by {shift:+.4f}" in said
    assert "model_fp32.tflite: int8" not in said


def conv_bn_model():
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 12, 2))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    for name in ("bn", "dw_bn"):  # inference statistics that are not the identity
        bn = model.get_layer(name)
        channels = bn.gamma.shape[0]
        rng = np.random.default_rng(len(name))
        bn.set_weights([rng.uniform(0.5, 2, channels), rng.normal(0, 0.5, channels),
                        rng.normal(0, 0.5, channels), rng.uniform(0.5, 2, channels)])
    return model


def test_rounded_per_channel_uses_each_channels_own_grid():
    kernel = np.array([[1.27, 0.004], [0.0049, -0.003]])  # channel 0 step 0.01; channel 1 step 0.004/127
    rounded = rounded_per_channel(kernel, 2, 127)
    assert rounded[0, 0] == pytest.approx(1.27) and rounded[1, 0] == 0.0
    assert rounded[0, 1] == pytest.approx(0.004) and rounded[1, 1] == pytest.approx(-0.003, abs=0.004 / 254)


@pytest.mark.parametrize("levels", [127, 64])
def test_layer_correction_restores_each_convolutions_mean_output_with_rounded_weights(levels):
    import tensorflow as tf

    from edgecxr.train.batchnorm_folding import folded_kernel_and_bias

    model = conv_bn_model()
    inputs = np.random.default_rng(0).uniform(0, 1, (40, 12, 12, 2)).astype(np.float32)
    means = convolution_input_means(model, inputs)
    assert sorted(means) == ["conv", "dw"] and means["conv"].shape == (12, 12, 2)
    corrected = layer_corrected_copy(model, means, levels)

    def mean_output(source, rounded: bool):
        """The first convolution as int8 weights would compute it (folded, optionally rounded)."""
        kernel, bias = folded_kernel_and_bias(source.get_layer("conv"), source.get_layer("bn"))
        kernel = np.asarray(kernel, np.float64)
        if rounded:
            kernel = rounded_per_channel(kernel, kernel.shape[-1], levels)
        y = tf.nn.conv2d(tf.constant(inputs, tf.float64), kernel, (1, 2, 2, 1), "SAME") + np.asarray(bias, np.float64)
        return np.asarray(tf.reduce_mean(y, axis=(0, 1, 2)))

    exact = mean_output(model, rounded=False)
    assert np.max(np.abs(mean_output(model, rounded=True) - exact)) > 1e-3  # rounding moves the mean
    assert np.max(np.abs(mean_output(corrected, rounded=True) - exact)) < 1e-4
    # Only BatchNorm betas moved; the model itself is untouched.
    changed = [a.name for a, b in zip(model.weights, corrected.weights) if not np.array_equal(a.numpy(), b.numpy())]
    assert sorted(changed) == ["beta", "beta"], changed
    assert not np.array_equal(model.get_layer("bn").beta.numpy(), corrected.get_layer("bn").beta.numpy())


@pytest.mark.slow
def test_layers_mode_converts_a_real_compact_run_and_records_what_it_did(tiny_run, tmp_path):
    results = convert_run(ConvertOptions(run=tiny_run, quantize="int8", format="all", calibration_size=40,
                                         out=tmp_path, bias_correction="layers", verify=False))
    assert [r.status for r in results] == ["unverified"] * len(results), [r.error for r in results]
    for name in ("model_int8.tflite", "model_int8.onnx"):
        applied = read_metadata(tmp_path / name).details["bias_correction"]
        assert applied["mode"] == "layers" and applied["corrected_convolutions"] == 6


def test_an_unknown_mode_is_refused_before_any_work(tiny_run, tmp_path):
    with pytest.raises(EdgecxrError, match="--bias-correction must be one of off, logit, layers"):
        convert_run(ConvertOptions(run=tiny_run, out=tmp_path / "never", bias_correction="yes"))
    assert not (tmp_path / "never").exists()
