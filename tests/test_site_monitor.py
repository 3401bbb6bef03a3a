"""The site monitor: the two-sample KS test in numpy, and batches of real X-rays compared with the
reference shipped in the model (unchanged images pass, a blurred acquisition is flagged)."""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

from edge_artifacts import edge_artifacts, gated_artifacts
from edgecxr.cli import main
from edgecxr.edge_runtime.two_sample_ks import kolmogorov_sf, ks_2samp, ks_statistic
from edgecxr.edge_runtime.predictor import Predictor
from edgecxr.edge_runtime.mean_shift import LAYOUT, OUTPUTS, ReferenceMoments
from edgecxr.edge_runtime.site_monitor import (KS, MEAN_SHIFT, MIN_BATCH, NO_SHIFT, SHIFT, SHIFT_MESSAGE, TOO_FEW,
                                               UNAVAILABLE, compare_with_reference)


@pytest.mark.parametrize("a, b, expected", [
    ([1, 2, 3], [4, 5, 6], 1.0),  # disjoint
    ([1, 2, 3, 4], [2.5, 3.5, 5, 6], 0.5),  # the gaps after 2 and after 4
    ([1, 1, 2], [1, 2, 2], 1 / 3),  # ties across the samples: 2/3 vs 1/3 at 1
    ([5, 5, 5], [5, 5], 0.0),  # one value in both
])
def test_ks_statistic_by_hand(a, b, expected):
    assert ks_statistic(a, b) == pytest.approx(expected)
    assert ks_statistic(b, a) == pytest.approx(expected)


@pytest.mark.parametrize("x, expected", [
    (0.0, 1.0), (0.5, 0.9639452), (1.0, 0.2699996), (1.2238, 0.1000), (1.3581, 0.0500), (1.6276, 0.0100),
    (2.0, 0.000670925),
])
def test_kolmogorov_distribution_by_table(x, expected):
    assert kolmogorov_sf(x) == pytest.approx(expected, abs=5e-5)  # tables give 4 decimals


def test_two_sample_p_value_by_hand_and_against_scipy():
    # D = 1 with n = m = 3: sqrt(9/6) * 1; P(K > x) = 2 (e^-2x^2 - e^-8x^2 + ...)
    x = math.sqrt(1.5)
    statistic, p_value = ks_2samp([1, 2, 3], [4, 5, 6])
    assert statistic == 1.0
    assert p_value == pytest.approx(2 * (math.exp(-2 * x * x) - math.exp(-8 * x * x) + math.exp(-18 * x * x)), rel=1e-9)
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n, m, shift in ((50, 360, 0.0), (100, 360, 0.3), (20, 40, 1.0)):
        a, b = rng.normal(shift, 1, n), rng.normal(0, 1, m)
        statistic, p_value = ks_2samp(a, b)
        assert statistic == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)
        assert p_value == pytest.approx(stats.kstwobign.sf(math.sqrt(n * m / (n + m)) * statistic), abs=1e-9)
    # Under the null, p-values are (about) uniform: the test is not biased towards alarms.
    null = [ks_2samp(rng.normal(size=100), rng.normal(size=300))[1] for _ in range(400)]
    assert 0.02 <= np.mean(np.array(null) < 0.05) <= 0.09


@pytest.fixture(scope="module")
def gated(tiny_run, xray_pool):
    return gated_artifacts(tiny_run, xray_pool)


@pytest.fixture(scope="module")
def blurred(xray_pool, tmp_path_factory):
    """The held-out X-rays as a site with a softer detector would send them."""
    folder = tmp_path_factory.mktemp("blurred_site")
    for path in sorted((xray_pool / "held_out").iterdir()):
        Image.open(path).filter(ImageFilter.GaussianBlur(2.5)).save(folder / path.name, quality=95)
    return folder


def monitor(predictor: Predictor, paths, reference=None):
    results = [r for r in predictor.predict_many(paths, batch_size=16) if r.label in ("NORMAL", "PNEUMONIA")]
    return compare_with_reference(reference or predictor.reference, [r.projection for r in results],
                                  [r.probability for r in results])


@pytest.mark.parametrize("artifact", ["int8.tflite", "int8.onnx"])
def test_unchanged_x_rays_pass_and_a_blurred_site_is_flagged(gated, xray_pool, blurred, artifact):
    predictor = Predictor.open(gated[artifact])
    assert predictor.reference.mean_shift is not None
    same = monitor(predictor, sorted((xray_pool / "held_out").iterdir()))
    assert same.verdict == NO_SHIFT and same.p_value > 0.05 and same.n_images >= 70, same
    assert same.n_reference == len(list((xray_pool / "calibration").iterdir()))
    assert same.method == MEAN_SHIFT and [t["name"] for t in same.tests] == [OUTPUTS, LAYOUT]
    shifted = monitor(predictor, sorted(blurred.iterdir()))
    assert shifted.verdict == SHIFT and shifted.p_value < 0.05 and shifted.message == SHIFT_MESSAGE, shifted
    few = monitor(predictor, sorted((xray_pool / "held_out").iterdir())[:MIN_BATCH - 1])
    assert few.verdict == TOO_FEW and "needs at least 20" in few.message


def test_a_reference_made_before_the_mean_shift_tests_keeps_the_ks_tests(gated, xray_pool, blurred):
    predictor = Predictor.open(gated["int8.tflite"])
    earlier = dataclasses.replace(predictor.reference, mean_shift=None)
    same = monitor(predictor, sorted((xray_pool / "held_out").iterdir()), earlier)
    assert same.method == KS and len(same.tests) == 17  # the probability and 8 components of each view
    assert same.verdict == NO_SHIFT, same
    assert monitor(predictor, sorted(blurred.iterdir()), earlier).verdict == SHIFT


def test_the_two_tests_read_their_p_values_off_the_nulls_drawn_at_convert(gated, xray_pool):
    predictor = Predictor.open(gated["int8.tflite"])
    reference = predictor.reference
    paths = sorted((xray_pool / "held_out").iterdir())
    results = [r for r in predictor.predict_many(paths, batch_size=16) if r.label in ("NORMAL", "PNEUMONIA")]
    probabilities = np.array([r.probability for r in results])
    projections = np.array([r.projection for r in results])
    result = compare_with_reference(reference, projections, probabilities)
    # By hand: the outputs against the stored validation sample, the layout against the training films.
    expected = np.column_stack([reference.reference_probabilities, reference.monitored_reference()[:, :8]])
    outputs = ReferenceMoments.of(expected).statistic(np.column_stack([probabilities, projections[:, :8]]))
    layout = reference.mean_shift.layout_reference.statistic(projections[:, 8:])
    assert [t["statistic"] for t in result.tests] == [round(outputs, 4), round(layout, 4)]
    assert [t["p_value"] for t in result.tests] == [float(f"{reference.mean_shift.outputs_null.p_value(outputs):.4g}"),
                                                     float(f"{reference.mean_shift.layout_null.p_value(layout):.4g}")]
    assert result.p_value == pytest.approx(min(1.0, 2 * min(t["p_value"] for t in result.tests)), rel=1e-3)
    # Nulls drawn by patient at 20, 50 and 100 films, 2,000 draws each, the strictest size kept.
    for null in (reference.mean_shift.outputs_null, reference.mean_shift.layout_null):
        assert len(null.statistics) == 2000 and null.sizes == (20, 50, 100) and null.batch_size in null.sizes


def test_the_monitor_says_why_it_cannot_run(tiny_run, tiny_kaggle):
    assert compare_with_reference(None, [], [0.5] * 30).verdict == UNAVAILABLE
    tiny = Predictor.open(edge_artifacts(tiny_run)["int8.tflite"])  # a reference of 10 validation images
    result = monitor(tiny, sorted((tiny_kaggle / "test").rglob("*.jpeg")))
    assert result.verdict == UNAVAILABLE and "needs 20" in result.message


def test_predict_reports_the_monitor_in_its_summary_and_json(gated, blurred, tmp_path, monkeypatch, capsys):
    summary = tmp_path / "summary.json"
    monkeypatch.setattr(sys, "argv", ["edgecxr", "predict", str(gated["int8.tflite"]), str(blurred), "--json",
                                      "--summary", str(summary)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0, err
    assert len(out.splitlines()) == len(list(blurred.iterdir()))
    data = json.loads(summary.read_text())["site_monitor"]
    assert data["verdict"] == SHIFT and data["n_images"] >= 70 and data["p_value"] < 0.05
    assert data["statistic"] > 0 and data["strongest"] in (OUTPUTS, LAYOUT)
    assert "images from this site differ from the training images" in " ".join(err.split())
