"""The shift-stress benchmark changes images the way each stress says, and scores validation only."""

import json

import numpy as np
import pytest
from PIL import Image

from research.shift_stress import STRESSES, shifted_summary, stress_rows

BY_NAME = {stress.name: stress for stress in STRESSES}


def framed_image() -> Image.Image:
    """Mid-grey 100x100 with a white 10-pixel frame: where the frame goes shows the framing change."""
    pixels = np.full((100, 100), 128, dtype=np.uint8)
    pixels[:10], pixels[-10:], pixels[:, :10], pixels[:, -10:] = 255, 255, 255, 255
    return Image.fromarray(pixels)


def test_zoom_in_cuts_the_frame_off_and_keeps_the_size():
    zoomed = np.asarray(BY_NAME["zoom in 10 %"].apply(framed_image(), 0))
    assert zoomed.shape == (100, 100)
    assert zoomed.max() == 128


def test_zoom_out_adds_a_dark_border_around_the_whole_image():
    zoomed = np.asarray(BY_NAME["zoom out 10 %"].apply(framed_image(), 0))
    assert zoomed.shape == (100, 100)
    assert zoomed[:10].max() == 0 and zoomed[:, -10:].max() == 0
    assert zoomed[12, 50] == 255  # the shrunken white frame is inside the border


def test_exposure_and_contrast_move_pixels_the_stated_way():
    ramp = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (8, 1)))
    original = np.asarray(ramp, dtype=np.int16)
    brighter = np.asarray(BY_NAME["gamma 0.6"].apply(ramp, 0), dtype=np.int16)
    darker = np.asarray(BY_NAME["gamma 1.6"].apply(ramp, 0), dtype=np.int16)
    squeezed = np.asarray(BY_NAME["contrast 0.6"].apply(ramp, 0), dtype=np.int16)
    assert (brighter >= original).all() and (brighter > original).mean() > 0.9
    assert (darker <= original).all() and (darker < original).mean() > 0.9
    assert np.ptp(squeezed) == pytest.approx(0.6 * 255, abs=2)


def test_noise_is_repeatable_per_image_and_differs_between_images():
    flat = Image.fromarray(np.full((32, 32), 128, dtype=np.uint8))
    noise = BY_NAME["noise 8"].apply
    first, again, other = (np.asarray(noise(flat, seed)) for seed in (3, 3, 4))
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert np.std(first.astype(float)) == pytest.approx(8.0, rel=0.2)


def test_rows_cover_every_stress_on_the_validation_split(tiny_run):
    rows = stress_rows(tiny_run, stresses=(BY_NAME["clean"], BY_NAME["zoom out 10 %"]))
    assert [row["stress"] for row in rows] == ["clean", "zoom out 10 %"]
    # Clean must reproduce the run's own validation metrics: same images, same preprocessing.
    validation = json.loads((tiny_run / "metrics.json").read_text())["validation"]
    for key in ("roc_auc", "accuracy", "sensitivity", "specificity"):
        assert rows[0][key] == pytest.approx(validation[key], abs=1e-6)
    assert rows[1]["mean_p_normal"] != rows[0]["mean_p_normal"]
    assert shifted_summary(rows)["specificity"] == rows[1]["specificity"]


def test_an_artifact_is_compared_with_its_keras_model_under_each_stress(tiny_run):
    from edge_artifacts import edge_artifacts

    artifacts = edge_artifacts(tiny_run)
    stresses = (BY_NAME["clean"], BY_NAME["zoom out 10 %"])
    exact = stress_rows(tiny_run, stresses=stresses, artifact=str(artifacts["fp32.tflite"]))
    # fp32 reproduces Keras to float rounding (1e-7); the one-epoch model puts nearly every image at
    # its threshold, so that rounding may flip a label or two: the probabilities are the check.
    for row in exact:
        assert row["max_abs_diff"] < 1e-4 and row["agreement"] >= 0.9
    assert shifted_summary(exact)["disagreements"] <= 2
    # int8 really moves the probabilities: the comparison sees the artifact's outputs, not Keras' twice.
    [rounded] = stress_rows(tiny_run, stresses=stresses[:1], artifact=str(artifacts["int8.tflite"]))
    assert rounded["mean_abs_diff"] > max(10 * exact[0]["mean_abs_diff"], 1e-6)
    assert rounded["disagreements"] == round((1 - rounded["agreement"]) * len(_validation(tiny_run)))


def _validation(run):
    return json.loads((run / "split.json").read_text())["validation"]
