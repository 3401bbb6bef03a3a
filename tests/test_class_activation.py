"""Class-activation heat maps from the answer's own inference, and one decode per film.

The map is checked against TensorFlow's own gradient of the logit on the Keras model the artifacts
came from (same process, so no CPU's rounding is assumed): the numpy head in the metadata must give
Grad-CAM's channel weights, and the runtime's map must be the Keras map."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_runner import run_cli
from edge_artifacts import edge_artifacts, legacy_artifacts
from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.heatmap import logit_gradient
from edgecxr.edge_runtime.images import open_image
from edgecxr.edge_runtime.predictor import Predictor
from edgecxr.edge_runtime.preprocessing import preprocess


@pytest.fixture(scope="module")
def models(tiny_run):
    return edge_artifacts(tiny_run)


def keras_grad_cam(run: Path, model_input: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d logit / d pooled features, the (h, w) map A @ weights / cells) by TensorFlow's autodiff."""
    import keras
    import tensorflow as tf

    from edgecxr.convert.keras_graph import with_features

    model = keras.models.load_model(run / "model.keras", compile=False)
    _, pooled, feature_map = with_features(model)(model_input[None], training=False)
    pooled = tf.convert_to_tensor(pooled)
    with tf.GradientTape() as tape:
        tape.watch(pooled)
        hidden = model.get_layer("fc1")(pooled)
        output = model.get_layer("pneumonia")
        logit = tf.matmul(hidden, output.kernel) + output.bias  # before the sigmoid
    gradient = tape.gradient(logit, pooled).numpy()[0]
    cells = feature_map.shape[1] * feature_map.shape[2]
    return gradient, np.asarray(feature_map)[0] @ gradient / cells


def test_the_numpy_head_gives_tensorflows_gradient(tiny_run, models, four_films):
    predictor = Predictor.open(models["fp32.tflite"])
    head = predictor.metadata.details["class_activation"]
    for film in four_films:
        model_input = preprocess(open_image(film), predictor.spec)
        expected, _ = keras_grad_cam(tiny_run, model_input)
        features = predictor.backend.infer(model_input[None]).features[0]
        np.testing.assert_allclose(logit_gradient(head, features), expected, rtol=1e-4, atol=1e-5)
        assert np.ptp(expected) > 0


@pytest.mark.parametrize("artifact", ["fp32.tflite", "fp32.onnx"])
def test_the_cam_of_one_inference_is_the_keras_models(tiny_run, models, four_films, artifact):
    predictor = Predictor.open(models[artifact])
    for film in four_films:
        analysis = predictor.analyse(film, heatmap="cam")
        heat = analysis.heat
        assert heat.method == "cam" and heat.evaluations == 1
        assert heat.probability == analysis.prediction.probability
        _, expected = keras_grad_cam(tiny_run, preprocess(open_image(film), predictor.spec))
        upsampled = np.asarray(Image.fromarray(expected.astype(np.float32), mode="F").resize(
            (predictor.spec.width, predictor.spec.height), Image.Resampling.BILINEAR))
        np.testing.assert_allclose(-heat.change, upsampled, atol=1e-4 * max(1.0, np.abs(upsampled).max()))
        assert heat.heat.shape == (predictor.spec.height, predictor.spec.width)
        assert 0.0 <= heat.heat.min() and heat.heat.max() <= 1.0


@pytest.mark.parametrize("artifact", ["int8.tflite", "int8.onnx"])
def test_int8_artifacts_give_a_cam_with_their_answer(models, four_films, artifact):
    predictor = Predictor.open(models[artifact])
    for film in four_films:
        analysis = predictor.analyse(film, heatmap="cam")
        plain = predictor.predict(film)
        assert (analysis.prediction.label, analysis.prediction.probability) == (plain.label, plain.probability)
        assert analysis.heat.method == "cam" and np.isfinite(analysis.heat.heat).all()
        assert analysis.image.size == analysis.heat.film_size


def test_occlusion_stays_an_option_and_cam_is_refused_where_the_model_cannot(models, tiny_run, four_films):
    predictor = Predictor.open(models["int8.tflite"])
    occlusion = predictor.analyse(four_films[2], heatmap="occlusion").heat
    assert occlusion.method == "occlusion" and occlusion.evaluations == 15 * 15 + 1
    assert predictor.analyse(four_films[2], heatmap="auto").heat.method == "cam"
    legacy = Predictor.open(legacy_artifacts(tiny_run)["int8.tflite"])
    with pytest.raises(EdgecxrError, match="exports no feature map"):
        legacy.analyse(four_films[2], heatmap="cam")
    assert legacy.analyse(four_films[2], heatmap="auto").heat.method == "occlusion"
    with pytest.raises(EdgecxrError, match="heat-map method"):
        predictor.analyse(four_films[2], heatmap="saliency")


def test_predict_decodes_each_film_once_heat_map_included(models, four_films, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for film in four_films:
        shutil.copy(film, folder / film.name)
    opened = []
    real_open = Image.open

    def counting_open(*args, **kwargs):  # the real decoder, counted
        opened.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    for method in ("cam", "occlusion"):
        opened.clear()
        out = tmp_path / f"maps-{method}"
        code, _, err = run_cli(monkeypatch, capsys, "predict", models["int8.tflite"], folder, "--json",
                               "--heatmap", out, "--heatmap-method", method, "--workers", "1")
        assert code == 0, err
        assert len(opened) == len(four_films), (method, len(opened))
        assert len(list(out.iterdir())) == len(four_films) and f"({method};" in err
