"""The input gate: what cannot be a chest X-ray gets `not_cxr` and a reason, never a diagnosis.

Cheap checks on the decoded picture, then the learned check on what the model sees (its features
and its input's layout), calibrated on real X-rays; models exported before the gate still run.
"""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont, ImageOps

from edge_artifacts import edge_artifacts, gated_artifacts, legacy_artifacts, write_resealed
from edgecxr.edge_runtime.errors import MetadataError
from edgecxr.edge_runtime.feature_reference import (FEATURES, INPUT_LAYOUT, conformal_threshold, fit_basis,
                                                   input_layout, min_calibration_images)
from edgecxr.edge_runtime.images import open_image
from edgecxr.edge_runtime.gate import check_image
from edgecxr.edge_runtime.metadata import metadata_path, read_metadata, write_metadata
from edgecxr.edge_runtime.gate import NOT_CXR
from edgecxr.edge_runtime.predictor import Predictor


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def text_page() -> Image.Image:
    page = Image.new("L", (640, 480), 255)
    draw = ImageDraw.Draw(page)
    for top in range(10, 460, 24):
        draw.text((20, top), "Referral: cough and fever for three days, please assess.", fill=0,
                  font=ImageFont.load_default(size=16))
    return page


def colour_photo() -> Image.Image:
    skimage_data = pytest.importorskip("skimage.data")
    return Image.fromarray(skimage_data.astronaut())


NON_XRAYS = {
    "1x1 black PNG": (lambda: Image.new("L", (1, 1), 0), "too small"),
    "blank white page": (lambda: Image.new("L", (800, 600), 255), "nearly uniform"),
    "16-bit noise": (lambda: Image.fromarray(np.random.default_rng(0).integers(0, 65536, (300, 300), dtype=np.uint16)),
                     "noise"),
    "8-bit noise": (lambda: Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 300), dtype=np.uint8)),
                    "noise"),
    "colour photograph": (colour_photo, "colour"),
    "typed text": (text_page, "flat tone"),
}


@pytest.mark.parametrize("name", list(NON_XRAYS))
@pytest.mark.parametrize("artifact", ["int8.tflite", "int8.onnx"])
def test_cheap_checks_refuse_what_cannot_be_a_chest_film(tiny_run, artifact, name):
    make, words = NON_XRAYS[name]
    predictor = Predictor.open(edge_artifacts(tiny_run)[artifact])
    result = predictor.predict(png(make()))
    assert result.label == NOT_CXR and result.refused and result.ok
    assert result.probability is None and words in result.reason, result.reason


def test_real_xrays_pass_the_cheap_checks(tiny_kaggle, xray_pool):
    paths = sorted(tiny_kaggle.rglob("*.jpeg")) + sorted(xray_pool.rglob("*.jpeg"))
    assert len(paths) >= 600
    refused = {p.name: reason for p in paths if (reason := check_image(open_image(p))) is not None}
    assert refused == {}


def test_an_rgb_copy_of_a_gray_film_is_not_a_colour_picture(tiny_kaggle):
    """The Kaggle JPEGs are RGB copies of gray films (chroma 0); a tint below the limit passes too."""
    film = Image.open(sorted((tiny_kaggle / "test" / "NORMAL").iterdir())[0])
    assert film.mode == "RGB" and check_image(film) is None
    red, green, blue = film.split()
    warm = Image.merge("RGB", [red.point(lambda v: min(255, v + 8)), green.point(lambda v: min(255, v + 4)), blue])
    assert check_image(warm) is None
    magenta = Image.merge("RGB", [red, green.point(lambda v: v // 3), blue])
    assert "colour" in check_image(magenta)


@pytest.fixture(scope="module")
def gated(tiny_run, xray_pool):
    return gated_artifacts(tiny_run, xray_pool)


def transformed(paths, how) -> list[bytes]:
    return [png(how(Image.open(p).convert("L"))) for p in paths]


@pytest.mark.parametrize("artifact", ["int8.tflite", "int8.onnx", "fp32.tflite"])
def test_learned_check_refuses_inverted_and_rotated_films_but_few_real_ones(gated, xray_pool, artifact):
    predictor = Predictor.open(gated[artifact])
    assert predictor.learned_check == "on"
    held_out = sorted((xray_pool / "held_out").iterdir())
    results = list(predictor.predict_many(held_out, batch_size=16))
    # Calibrated to refuse at most 1 % of X-rays like the 220 calibration images: 80 unseen ones may
    # lose a few by chance, not more.
    assert sum(r.refused for r in results) <= 4
    assert all(r.gate_distance is not None for r in results)
    assert all(r.label != NOT_CXR or r.gate_distance > 1 for r in results)
    sample = held_out[::4]
    inverted = list(predictor.predict_many(transformed(sample, ImageOps.invert), batch_size=16))
    rotated = list(predictor.predict_many(transformed(sample, lambda im: im.rotate(90, expand=True)), batch_size=16))
    assert sum(r.refused for r in inverted) >= 0.9 * len(sample)
    assert sum(r.refused for r in rotated) >= 0.9 * len(sample)
    reasons = [r.reason for r in inverted + rotated if r.refused]
    assert all("distance" in reason and "refused above 1" in reason for reason in reasons)
    assert all(r.probability is None for r in inverted + rotated if r.refused)


def test_convert_leaves_the_learned_check_off_with_too_few_validation_images(tiny_run, tiny_kaggle):
    predictor = Predictor.open(edge_artifacts(tiny_run)["int8.tflite"])
    reference = predictor.reference
    assert reference is not None and not reference.learned_check_available
    assert len(reference.reference_probabilities) < min_calibration_images(0.005)
    assert predictor.learned_check.startswith("unavailable: too few validation images")
    result = predictor.predict(sorted((tiny_kaggle / "test" / "NORMAL").iterdir())[0])
    assert result.label in ("NORMAL", "PNEUMONIA") and result.gate_distance is None


@pytest.mark.parametrize("artifact", ["fp32.tflite", "int8.tflite", "fp32.onnx", "int8.onnx"])
def test_models_exported_before_the_gate_still_run(tiny_run, tiny_kaggle, artifact):
    model = legacy_artifacts(tiny_run)[artifact]
    assert "feature_reference" not in json.loads(metadata_path(model).read_text())
    predictor = Predictor.open(model)
    assert predictor.backend.feature_dim is None and predictor.reference is None
    assert "no feature output" in predictor.learned_check
    results = list(predictor.predict_many(sorted((tiny_kaggle / "test").rglob("*.jpeg")), batch_size=5))
    assert all(r.label in ("NORMAL", "PNEUMONIA") and r.gate_distance is None for r in results)
    assert predictor.predict(png(Image.new("L", (512, 512), 0))).label == NOT_CXR  # cheap checks still run


def test_the_reference_survives_its_metadata_round_trip(gated, xray_pool, tmp_path):
    source = gated["int8.tflite"]
    reference = read_metadata(source).feature_reference
    text = metadata_path(source).read_text()
    assert len(text) < 150_000 and reference.n_numbers() < 40_000
    model = tmp_path / source.name
    shutil.copy(source, model)
    metadata = read_metadata(source)
    write_metadata(model, metadata)
    again = read_metadata(model).feature_reference
    for name in (FEATURES, INPUT_LAYOUT):
        np.testing.assert_allclose(again.spaces[name].basis.components, reference.spaces[name].basis.components,
                                   rtol=1e-5, atol=1e-12)
        assert again.spaces[name].refusal_threshold == reference.spaces[name].refusal_threshold
    np.testing.assert_array_equal(again.reference_probabilities, reference.reference_probabilities)
    assert again.calibration == reference.calibration
    for null in ("outputs_null", "layout_null"):
        np.testing.assert_array_equal(getattr(again.mean_shift, null).statistics,
                                      getattr(reference.mean_shift, null).statistics)
    images = sorted((xray_pool / "held_out").iterdir())[:10]
    before = [r.gate_distance for r in Predictor.open(source).predict_many(images)]
    after = [r.gate_distance for r in Predictor.open(model).predict_many(images)]
    np.testing.assert_allclose(after, before, rtol=1e-9)


def test_an_inconsistent_reference_is_refused_in_one_line(gated, tmp_path):
    model = tmp_path / gated["int8.tflite"].name
    shutil.copy(gated["int8.tflite"], model)
    data = json.loads(metadata_path(gated["int8.tflite"]).read_text())
    data["feature_reference"][FEATURES]["variances"] = data["feature_reference"][FEATURES]["variances"][:-1]
    write_resealed(model, data)
    with pytest.raises(MetadataError, match="feature_reference.features is inconsistent"):
        read_metadata(model)


def test_conformal_threshold_and_its_minimum(tmp_path):
    assert conformal_threshold(np.arange(1, 100), 0.01) == 99  # n = 99: the largest
    assert conformal_threshold(np.arange(1, 99), 0.01) is None  # n = 98: none qualifies
    assert conformal_threshold(np.arange(1, 1001), 0.01) == 991  # ceil(1001 * 0.99) = 991
    assert min_calibration_images(0.01) == 99 and min_calibration_images(0.005) == 199


def test_basis_scores_and_layout_by_hand():
    rng = np.random.default_rng(0)
    # Variance 9 along the first axis, 1 along the second, 0.01 along the third and fourth.
    vectors = rng.normal(size=(20000, 4)) * np.array([3.0, 1.0, 0.1, 0.1])
    basis = fit_basis(vectors, n_components=2)
    np.testing.assert_allclose(basis.variances, [9.0, 1.0], rtol=0.05)
    assert basis.residual_variance == pytest.approx(0.01, rel=0.05)
    # (3, 0, 0, 0): 1 in Mahalanobis units squared; (0, 0, 0.3, 0): 0.09 / 0.01 = 9 from the residual.
    np.testing.assert_allclose(basis.score(np.array([[3.0, 0, 0, 0], [0, 0, 0.3, 0]])), [1.0, 9.0], rtol=0.1)
    inputs = np.zeros((1, 64, 64, 3))
    inputs[0, :8, :8] = 1.0  # the top-left cell of the 8x8 grid
    layout = input_layout(inputs)
    assert layout.shape == (1, 64) and layout[0, 0] == 1.0 and layout[0, 1:].sum() == 0
