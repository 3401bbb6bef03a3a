"""The edge predictor gives the same numbers as the evaluation pipeline for the same artifact."""

from __future__ import annotations

import numpy as np
import pytest

from edge_artifacts import edge_artifacts
from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.folders import LABELS, labelled_images
from edgecxr.edge_runtime.metrics import binary_metrics
from edgecxr.edge_runtime.predictor import Predictor


@pytest.mark.parametrize("artifact", ["int8.tflite", "fp32.tflite", "int8.onnx", "fp32.onnx"])
def test_predictions_equal_the_evaluation_pipeline(tiny_run, tiny_kaggle, artifact):
    from edgecxr.train.evaluate import evaluate

    model = edge_artifacts(tiny_run)[artifact]
    samples = labelled_images(tiny_kaggle / "test")
    predictor = Predictor.open(model)
    one_by_one = [r.probability for r in predictor.predict_many([s.path for s in samples], batch_size=1)]
    batched = [r.probability for r in predictor.predict_many([s.path for s in samples], batch_size=7)]
    np.testing.assert_allclose(batched, one_by_one, atol=1e-6, rtol=0)

    # The evaluation path decodes through the pixel cache and runs memory-sized batches: same preprocessing code.
    from edgecxr.edge_runtime.batching import predict_in_batches
    from edgecxr.train.keras_backend import open_any_model
    from edgecxr.train.pixel_cache import load_pixels
    from edgecxr.edge_runtime.preprocessing import scale_pixels

    spec = predictor.spec
    pixel_set = load_pixels(samples, spec, "decoding")
    reference = predict_in_batches(open_any_model(model).predict_proba, scale_pixels(pixel_set.pixels.astype(np.float32), spec))
    np.testing.assert_allclose(one_by_one, reference, atol=1e-6, rtol=0)

    truth = [s.label == LABELS.index("PNEUMONIA") for s in samples]
    ours = binary_metrics(truth, one_by_one, predictor.threshold)
    assert ours["accuracy"] == evaluate(model, tiny_kaggle / "test")["accuracy"]


def test_int8_quantization_is_read_from_the_model(tiny_run, tiny_kaggle):
    fp32 = Predictor.open(edge_artifacts(tiny_run)["fp32.tflite"])
    int8 = Predictor.open(edge_artifacts(tiny_run)["int8.tflite"])
    assert int8.backend.input_dtype == "int8" and fp32.backend.input_dtype == "float32"
    paths = sorted((tiny_kaggle / "test" / "PNEUMONIA").iterdir())
    p32 = np.array([r.probability for r in fp32.predict_many(paths)])
    p8 = np.array([r.probability for r in int8.predict_many(paths)])
    # Dequantized output is a probability close to the float model's, not a raw int8 code.
    assert ((p8 >= 0) & (p8 <= 1)).all()
    assert np.abs(p8 - p32).max() < 0.1


def test_threads_option_reaches_the_runtime_and_keeps_results(tiny_run, tiny_kaggle):
    image = sorted((tiny_kaggle / "test" / "NORMAL").iterdir())[0]
    model = edge_artifacts(tiny_run)["int8.tflite"]
    one = Predictor.open(model, threads=1).predict(image)
    two = Predictor.open(model, threads=2).predict(image)
    assert one.probability == pytest.approx(two.probability, abs=1e-6)
    onnx = Predictor.open(edge_artifacts(tiny_run)["int8.onnx"], threads=2)
    assert onnx.backend.session.get_session_options().intra_op_num_threads == 2
    with pytest.raises(EdgecxrError, match="threshold"):
        Predictor.open(model, threshold=2.0)
