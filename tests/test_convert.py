"""edgecxr convert on a tiny real run: every format and quantization, verified in its real runtime."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from edgecxr.convert.calibration import calibration_folder, calibration_set, stratified_sample, verification_set
from edgecxr.convert.exporter import ConvertOptions, build_file, convert_run, failure_message
from edgecxr.convert.fidelity import compare
from edgecxr.convert.plan import plan_artifacts
from edgecxr.edge_runtime.run_folder import RunFolder
from edgecxr.convert.verify import problems, verification_table
from edgecxr.edge_runtime.formats import tolerance_of
from edgecxr.edge_runtime.formats import format_of_file
from edgecxr.edge_runtime.backends import TFLiteBackend, open_backend, output_roles
from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.folders import LabelledImage
from edgecxr.edge_runtime.metadata import read_metadata, sha256_file, write_metadata
from edgecxr.edge_runtime.python_command import python_module

pytestmark = [pytest.mark.slow, pytest.mark.numeric]

ALL_SIX = ["model_fp32.tflite", "model_fp16.tflite", "model_dynamic.tflite", "model_int8.tflite",
           "model_fp32.onnx", "model_int8.onnx"]
# Every row of the format table: the six above, ORT Mobile's two and the phone model (tests/test_mobile.py).
TENSOR_ARTIFACTS = [*ALL_SIX, "model_fp32.ort", "model_int8.ort"]  # graphs that take the preprocessed tensor
ALL_ARTIFACTS = [*TENSOR_ARTIFACTS, "model_int8_mobile.tflite"]


@pytest.fixture(scope="module")
def run_at_half(tiny_run, tmp_path_factory) -> Path:
    """The tiny run with its threshold at 0.5.

    After one epoch on 60 images the tiny model gives every image nearly the same probability
    (about 0.56, spread under 1e-3), and its validation-picked threshold sits exactly on the lowest
    of them: there, any 8-bit output step (1/256 for a TFLite int8 sigmoid) flips labels, which the
    CLI failure test below relies on. The conversion tests use the same model at 0.5, so they test
    the pipeline; quantization quality is measured on the real-data run (README, benchmarks/).
    """
    run = tmp_path_factory.mktemp("runs") / "tiny_half"
    shutil.copytree(tiny_run, run)
    metadata = read_metadata(run / "model.keras")
    metadata.threshold = 0.5
    write_metadata(run / "model.keras", metadata)
    return run


@pytest.fixture(scope="module")
def exported(run_at_half, tmp_path_factory):
    """Convert the tiny run once into every artifact; the tests below inspect the result."""
    out = tmp_path_factory.mktemp("export")
    results = convert_run(ConvertOptions(run=run_at_half, quantize="all", format="all", calibration_size=40, out=out))
    return out, {r.name: r for r in results}


def test_every_artifact_is_built_and_verified(exported):
    out, results = exported
    assert sorted(results) == sorted(ALL_ARTIFACTS)
    for name, result in results.items():
        assert result.status == "ok", result.error
        assert (out / name).is_file() and (out / f"{name}.json").is_file()
        assert result.verification["n_images"] > 0
    # No temporary file survives a successful conversion either.
    assert not [p.name for p in out.iterdir() if ".partial" in p.name]


def test_fp32_artifacts_reproduce_keras_probabilities(exported):
    _, results = exported
    for name in ("model_fp32.tflite", "model_fp32.onnx"):
        assert results[name].verification["max_abs_diff"] <= 1e-4
        assert results[name].verification["agreement"] == 1.0


def test_metadata_of_every_artifact_matches_its_file(exported, run_at_half):
    out, _ = exported
    source = read_metadata(run_at_half / "model.keras")
    for name in ALL_ARTIFACTS:
        metadata = read_metadata(out / name)  # raises when the sha256 does not match
        assert metadata.sha256 == sha256_file(out / name)
        assert metadata.model_file == name
        row = format_of_file(name)
        assert (metadata.format, metadata.quantization) == (row.format, row.quantization)
        assert metadata.preprocessing == source.preprocessing
        assert metadata.threshold == source.threshold and metadata.labels == source.labels
        assert metadata.details["source_sha256"] == source.sha256
        assert {"input", "output", "versions"} <= set(metadata.details)


@pytest.mark.parametrize("name", ["model_fp32.tflite", "model_fp32.onnx"])
def test_the_feature_and_map_outputs_equal_the_keras_models_layers(exported, run_at_half, name):
    import keras

    from edgecxr.convert.keras_graph import with_features

    out, _ = exported
    inputs = verification_set(RunFolder.open(run_at_half), 8, seed=0).inputs[:]
    model = keras.models.load_model(run_at_half / "model.keras", compile=False)
    probabilities, features, feature_map = (np.asarray(t) for t in with_features(model)(inputs, training=False))
    backend = open_backend(out / name)
    got_probabilities, got_features = backend.predict(inputs)
    assert got_features.shape == features.shape == (8, 64)  # the compact CNN's global average pooling
    np.testing.assert_allclose(got_features, features, atol=1e-4)
    np.testing.assert_allclose(got_probabilities, probabilities[:, 0], atol=1e-4)
    assert np.ptp(features) > 0  # not a constant that would match anything
    inference = backend.infer(inputs, feature_maps=True)
    # The map the pooling averages (the unpooled last block: 16x16 cells of 64 channels at 64x64, 8x8 at
    # this half-size input of 32).
    assert inference.feature_maps.shape == feature_map.shape and feature_map.ndim == 4
    np.testing.assert_allclose(inference.feature_maps, feature_map, atol=1e-4)
    np.testing.assert_allclose(inference.feature_maps.mean(axis=(1, 2)), got_features, atol=1e-4)
    assert backend.infer(inputs).feature_maps is None  # not read unless asked for


def test_every_artifact_exports_its_feature_map_and_carries_the_head(exported):
    out, _ = exported
    for name in TENSOR_ARTIFACTS:
        metadata = read_metadata(out / name)
        assert len(metadata.details["feature_map"]["shape"]) == 4, name
        head = metadata.details["class_activation"]
        assert head["method"] == "grad-cam" and [d["activation"] for d in head["dense"]] == ["relu", "sigmoid"]
        assert open_backend(out / name).has_feature_map, name


def test_every_artifact_carries_a_feature_reference_made_in_its_runtime(exported):
    out, results = exported
    references = {}
    for name in TENSOR_ARTIFACTS:
        metadata = read_metadata(out / name)
        reference = metadata.feature_reference
        assert reference is not None and reference.feature_dim == 64, name
        assert metadata.details["features"]["shape"][-1] == 64
        calibration = reference.calibration
        assert calibration["basis_images"]["source"] == "split.json train"
        assert calibration["calibration_images"]["source"] == "split.json validation"
        assert calibration["n_calibration_images"] == len(reference.reference_probabilities) > 0
        # The tiny run's validation half is far below the 199 images the rule needs: no threshold.
        assert not reference.learned_check_available and "conformal" in calibration["threshold_rule"]
        # Nor is it enough for the monitor's nulls drawn by patient: the KS tests remain.
        assert reference.mean_shift is None and calibration["monitor_tests"].startswith("Kolmogorov"), name
        assert results[name].input_gate["n_calibration_images"] == calibration["n_calibration_images"]
        references[name] = reference
    # One basis for the run (fitted on the Keras model), a monitor sample per artifact (its runtime).
    first = references["model_fp32.tflite"].spaces["features"].basis.mean
    for reference in references.values():
        np.testing.assert_array_equal(reference.spaces["features"].basis.mean, first)
    assert not np.array_equal(references["model_int8.tflite"].reference_probabilities,
                              references["model_fp32.tflite"].reference_probabilities)


def test_int8_tflite_takes_int8_with_scale_read_from_the_artifact(exported):
    out, _ = exported
    metadata = read_metadata(out / "model_int8.tflite")
    backend = TFLiteBackend(out / "model_int8.tflite")
    assert backend.input_dtype == "int8" and np.dtype(backend.output["dtype"]) == np.int8
    for role, detail in (("input", backend.input), ("output", backend.output)):
        scale, zero_point = detail["quantization"]
        assert metadata.details[role]["scale"] == pytest.approx(scale)
        assert metadata.details[role]["zero_point"] == zero_point
    # Calibration saw inputs normalised exactly once: their range is the spec's value range, so the
    # input step is range/255 (twice-normalised data would give a step 255 times smaller).
    low, high = metadata.preprocessing.value_range
    assert metadata.details["input"]["scale"] == pytest.approx((high - low) / 255, rel=0.05)
    assert metadata.details["calibration"]["n_images"] > 0


def test_int8_tflite_is_at_most_30_percent_of_fp32(exported):
    out, _ = exported
    assert (out / "model_int8.tflite").stat().st_size <= 0.30 * (out / "model_fp32.tflite").stat().st_size


def test_onnx_batch_dimension_is_dynamic(exported, tiny_run):
    out, _ = exported
    verification = verification_set(RunFolder.open(tiny_run), 5, seed=0)
    for name in ("model_fp32.onnx", "model_int8.onnx"):
        backend = open_backend(out / name)
        assert not isinstance(backend.session.get_inputs()[0].shape[0], int)
        batched = backend.predict_proba(verification.inputs)
        singles = np.concatenate([backend.predict_proba(x[None]) for x in verification.inputs])
        assert batched.shape == (len(verification.inputs),)
        np.testing.assert_allclose(batched, singles, atol=1e-5)


def test_verify_json_and_table_list_every_artifact(exported):
    out, results = exported
    report = json.loads((out / "verify.json").read_text())
    assert sorted(report["artifacts"]) == sorted(ALL_ARTIFACTS)
    assert report["failures"] == []
    assert report["verification_images"]["n_images"] == results["model_int8.tflite"].verification["n_images"]
    console = Console(record=True, width=200)
    console.print(verification_table([r.to_dict() for r in results.values()]))
    text = console.export_text()
    for name in ALL_ARTIFACTS:
        assert name in text
    assert "failed" not in text and text.count(" ok") >= len(ALL_ARTIFACTS)


def test_truncated_artifact_fails_and_keeps_the_earlier_file(exported, run_at_half):
    out, _ = exported
    before = (out / "model_fp32.tflite").read_bytes()
    before_meta = (out / "model_fp32.tflite.json").read_text()

    def truncated_build(plan, target, ctx):
        facts = build_file(plan, target, ctx)
        target.write_bytes(target.read_bytes()[:1000])  # a deliberately broken artifact
        return facts

    results = convert_run(ConvertOptions(run=run_at_half, quantize="none", format="tflite", out=out),
                          build=truncated_build)
    assert [r.status for r in results] == ["failed"]
    assert "model_fp32.tflite" in results[0].error
    assert (out / "model_fp32.tflite").read_bytes() == before
    assert (out / "model_fp32.tflite.json").read_text() == before_meta
    assert not [p.name for p in out.iterdir() if ".partial" in p.name]
    report = json.loads((out / "verify.json").read_text())
    assert report["artifacts"]["model_fp32.tflite"]["status"] == "ok"  # still describes the kept file
    assert [f["name"] for f in report["failures"]] == ["model_fp32.tflite"]
    message = failure_message(results)
    assert message.startswith("model_fp32.tflite") and "earlier file" in message


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([*python_module("edgecxr.cli"), "convert", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_refuses_to_calibrate_on_test_in_one_line(run_at_half, tiny_kaggle, tmp_path):
    done = run_cli(str(run_at_half), "--format", "tflite", "--calibration-data", str(tiny_kaggle / "test"),
                   "--out", str(tmp_path / "export"))
    assert done.returncode == 2
    assert "refusing to calibrate" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "export").exists() or not list((tmp_path / "export").iterdir())


def test_cli_names_a_missing_run_folder(tmp_path):
    done = run_cli(str(tmp_path / "nope"))
    assert done.returncode == 2 and "run folder not found" in done.stderr and "Traceback" not in done.stderr


def test_an_unwritable_output_folder_is_one_line_naming_it(tiny_run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = run_cli(str(tiny_run), "--quantize", "none", "--format", "onnx", "--no-verify", "--out", str(blocker / "export"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error:") and str(blocker) in done.stderr and len(done.stderr.splitlines()) == 1


def test_no_verify_publishes_unverified_artifacts(tiny_run, tmp_path):
    results = convert_run(ConvertOptions(run=tiny_run, quantize="none", format="onnx", verify=False, out=tmp_path))
    assert [(r.name, r.status) for r in results] == [("model_fp32.onnx", "unverified")]
    assert read_metadata(tmp_path / "model_fp32.onnx").sha256 == sha256_file(tmp_path / "model_fp32.onnx")


# --- the known traps -------------------------------------------------------------------------

def small_model(extra_layers=()):
    import keras

    inputs = keras.Input((16, 16, 1), name="image")
    x = inputs
    for layer in extra_layers:
        x = layer(x)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dropout(0.5)(x))
    return keras.Model(inputs, outputs)


def test_augmentation_layers_do_not_reach_the_exported_graphs(tmp_path):
    import keras
    import onnx

    from edgecxr.convert.keras_graph import export_saved_model, serving_function
    from edgecxr.convert.onnx_export import convert_onnx_float
    from edgecxr.convert.tflite_export import convert_tflite
    from edgecxr.edge_runtime.preprocessing import PreprocessSpec

    spec = PreprocessSpec(height=16, width=16)
    model = small_model([keras.layers.RandomFlip("horizontal", seed=1), keras.layers.RandomRotation(0.2, seed=2)])
    export_saved_model(model, spec, tmp_path / "sm")
    inputs = np.random.default_rng(0).random((4, 16, 16, 1), dtype=np.float32)
    expected = np.asarray(model(inputs, training=False)).reshape(-1)

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=convert_tflite(tmp_path / "sm", "none"))
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], [4, 16, 16, 1])
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], inputs)
    interpreter.invoke()
    outputs = interpreter.get_output_details()
    probability = output_roles([list(o["shape_signature"]) for o in outputs]).probability
    got = interpreter.get_tensor(outputs[probability]["index"]).reshape(-1)
    np.testing.assert_allclose(got, expected, atol=1e-5)  # deterministic: no random op ran

    serve, signature = serving_function(model, spec)
    proto = onnx.load_from_string(convert_onnx_float(serve, signature))
    assert not [n.op_type for n in proto.graph.node if "Random" in n.op_type]


def test_a_random_op_active_at_inference_is_refused(tmp_path):
    import keras
    import tensorflow as tf

    from edgecxr.convert.keras_graph import export_saved_model
    from edgecxr.edge_runtime.preprocessing import PreprocessSpec

    class AlwaysNoisy(keras.layers.Layer):
        def call(self, x):
            return x + tf.random.uniform(tf.shape(x)) * 0.01

    with pytest.raises(EdgecxrError, match="random ops"):
        export_saved_model(small_model([AlwaysNoisy()]), PreprocessSpec(height=16, width=16), tmp_path / "sm")
    assert not (tmp_path / "sm").exists()


def test_normalising_twice_is_refused(tmp_path):
    import keras

    from edgecxr.convert.keras_graph import check_single_normalisation
    from edgecxr.edge_runtime.preprocessing import PreprocessSpec

    model = small_model([keras.layers.Rescaling(1 / 255)])
    with pytest.raises(EdgecxrError, match="normalised twice"):
        check_single_normalisation(model, PreprocessSpec(height=16, width=16, scale=1 / 255))
    check_single_normalisation(model, PreprocessSpec(height=16, width=16, scale=1.0))  # once: in the model
    check_single_normalisation(small_model(), PreprocessSpec(height=16, width=16, scale=1 / 255))


# --- calibration and verification data ---------------------------------------------------------

def test_calibration_comes_from_train_and_never_overlaps_verification(tiny_run):
    run = RunFolder.open(tiny_run)
    verification = verification_set(run, 500, seed=0)
    calibration = calibration_set(run, 30, seed=0, exclude=verification.paths)
    train_paths = {str(s.path) for s in run.split("train")}
    assert set(calibration.paths) <= train_paths
    assert not set(calibration.paths) & set(verification.paths)
    assert set(calibration.labels.tolist()) == {0, 1}
    assert calibration.inputs[:].dtype == np.float32
    low, high = run.metadata.preprocessing.value_range
    assert calibration.inputs[:].min() >= low and calibration.inputs[:].max() <= high


def test_calibration_refuses_test_and_uses_train_of_a_kaggle_root(tiny_kaggle):
    assert calibration_folder(tiny_kaggle) == tiny_kaggle / "train"
    with pytest.raises(EdgecxrError, match="test images"):
        calibration_folder(tiny_kaggle / "test")


def test_stratified_sample_keeps_class_shares_and_is_seeded():
    samples = [LabelledImage(Path(f"{i}.png"), int(i % 4 == 0)) for i in range(400)]
    chosen = stratified_sample(samples, 100, seed=3)
    assert len(chosen) == 100 and sum(s.label for s in chosen) == 25
    assert chosen == stratified_sample(samples, 100, seed=3)
    assert chosen != stratified_sample(samples, 100, seed=4)


# --- pure helpers --------------------------------------------------------------------------------

def test_compare_reports_agreement_differences_and_accuracies():
    result = compare([0.9, 0.2, 0.6, 0.4], [0.8, 0.3, 0.4, 0.4], labels=[1, 0, 1, 1], threshold=0.5)
    assert result["agreement"] == 0.75 and result["disagreements"] == 1
    assert result["max_abs_diff"] == pytest.approx(0.2)
    assert result["mean_abs_diff"] == pytest.approx(0.1)
    assert result["reference_accuracy"] == 0.75 and result["artifact_accuracy"] == 0.5
    assert "reference_accuracy" not in compare([0.1], [0.1], labels=None, threshold=0.5)


def test_tolerances():
    ok = compare([0.1, 0.9], [0.10005, 0.9], None, 0.5)
    assert problems(ok, "none") == [] and problems(ok, "int8") == []
    assert problems(compare([0.1, 0.9], [0.1002, 0.9], None, 0.5), "none")
    one_class = compare([0.1, 0.9] * 50, [0.9, 0.9] * 50, None, 0.5)
    assert any("one class" in p for p in problems(one_class, "int8"))


def test_flips_within_the_band_around_the_threshold_are_not_counted():
    """A tiny model's probabilities crowd its threshold; where it sits within rounding of it, which side an
    image falls on differs between CPUs, so only images further from it count (formats.py says why)."""
    band = tolerance_of("int8").threshold_band
    reference = [0.1, 0.9] * 49 + [0.5 + band / 2, 0.5 - band / 2]  # two flips, both within the band
    artifact = [0.1, 0.9] * 49 + [0.5 - band / 2, 0.5 + band / 2]
    near = compare(reference, artifact, None, 0.5, band=band)
    assert near["agreement"] == 0.98 and near["near_threshold"] == 2 and near["agreement_away"] == 1.0
    assert problems(near, "int8") == []
    # The same two flips a little further out are the artifact's fault, and fail it.
    far = compare([0.1, 0.9] * 49 + [0.5 + 2 * band] * 2, [0.1, 0.9] * 49 + [0.5 - 2 * band] * 2, None, 0.5,
                  band=band)
    assert far["near_threshold"] == 0 and far["agreement_away"] == 0.98
    three = compare([0.1, 0.9] * 48 + [0.5 + 2 * band] * 4, [0.1, 0.9] * 48 + [0.5 - 2 * band] * 4, None, 0.5,
                    band=band)
    assert any("96.0% of 100 images away from the threshold" in p for p in problems(three, "int8"))
    # fp32 has no band: every flip counts.
    assert tolerance_of("none").threshold_band == 0


def test_plan_names_and_choices():
    assert [p.filename for p in plan_artifacts("int8", "all")] == [
        "model_fp32.tflite", "model_int8.tflite", "model_fp32.onnx", "model_int8.onnx", "model_fp32.ort",
        "model_int8.ort", "model_int8_mobile.tflite"]
    assert sorted(p.filename for p in plan_artifacts("all", "all")) == sorted(ALL_ARTIFACTS)
    assert [p.filename for p in plan_artifacts("int8", "mobile")] == ["model_int8_mobile.tflite"]
    assert [p.filename for p in plan_artifacts("none", "tflite")] == ["model_fp32.tflite"]
    with pytest.raises(EdgecxrError, match="not available"):
        plan_artifacts("fp16", "onnx")
    with pytest.raises(EdgecxrError):
        plan_artifacts("int4", "all")
