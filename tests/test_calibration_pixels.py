"""Convert holds its calibration and verification images as uint8 and scales them a slice at a
time: every consumer must see exactly the float32 inputs it saw when the sets were held scaled."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_artifacts import edge_artifacts
from edgecxr.convert.calibration import calibration_set, verification_set
from edgecxr.convert.tflite_export import representative_dataset
from edgecxr.edge_runtime.backends import open_backend
from edgecxr.edge_runtime.batching import predict_in_batches, predict_with_features_in_batches
from edgecxr.edge_runtime.feature_reference import input_layout
from edgecxr.edge_runtime.folders import LabelledImage
from edgecxr.edge_runtime.preprocessing import scale_pixels
from edgecxr.edge_runtime.run_folder import RunFolder
from edgecxr.train.pixel_cache import load_pixels


def test_image_sets_are_uint8_and_read_as_the_scaled_inputs_bit_for_bit(tiny_run):
    run = RunFolder.open(tiny_run)
    spec = run.metadata.preprocessing
    for image_set in (verification_set(run, 20, seed=0), calibration_set(run, 30, seed=0)):
        assert image_set.inputs.pixels.dtype == np.uint8
        samples = [LabelledImage(Path(p), int(label)) for p, label in zip(image_set.paths, image_set.labels)]
        pixels = load_pixels(samples, spec, "decoding").pixels
        expected = scale_pixels(pixels.astype(np.float32), spec)  # how the sets were held before
        assert image_set.inputs[:].dtype == np.float32
        assert np.array_equal(image_set.inputs[:], expected)
        assert np.array_equal(image_set.inputs[3:11], expected[3:11])
        assert np.array_equal(np.stack(list(image_set.inputs)), expected)
        generated = np.concatenate([step[0] for step in representative_dataset(image_set.inputs)()])
        assert np.array_equal(generated, expected)
        assert np.array_equal(input_layout(image_set.inputs), input_layout(expected))


def test_calibration_and_verification_results_are_bit_identical(tiny_run):
    run = RunFolder.open(tiny_run)
    backend = open_backend(edge_artifacts(tiny_run)["int8.tflite"])
    image_set = verification_set(run, 40, seed=0)
    held_scaled = image_set.inputs[:]
    for batch_size in (1, 7, None):
        assert np.array_equal(predict_in_batches(backend.predict_proba, image_set.inputs, batch_size=batch_size),
                              predict_in_batches(backend.predict_proba, held_scaled, batch_size=batch_size))
    got = predict_with_features_in_batches(backend.predict, image_set.inputs, batch_size=5)
    want = predict_with_features_in_batches(backend.predict, held_scaled, batch_size=5)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
