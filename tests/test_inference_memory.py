"""Inference batches are sized by memory: the bug that killed the published Lite0 command.

The final scoring of a training run (train.trainer.predict_pixels) ran 256 images of 224x224
through EfficientNet-Lite0 in one eager call and peaked at 21 GB. Here an untrained Lite0 scores
300 such images through the same function in a fresh process, whose peak resident memory must
stay under 3 GB: the budgeted batches take about 1.4 GB in all, while a constant batch of 256
takes 3.8 GB even through the compiled step (and 21 GB eagerly).
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from edgecxr.edge_runtime.batching import batch_size_for, predict_in_batches
from edgecxr.edge_runtime.python_command import ISOLATED_PYTHON

PEAK_LIMIT_GB = 3.0

SCORE_LITE0 = """
import json, resource
import numpy as np
from edgecxr.train.model_specs import get_model_spec
from edgecxr.train.trainer import predict_pixels

spec = get_model_spec("efficientnet_lite0")
preprocess_spec = spec.preprocess_spec(224)
model = spec.build(preprocess_spec.input_shape, seed=0, weights="none")
pixels = np.random.default_rng(0).integers(0, 256, (300, 224, 224, 3), dtype=np.uint8)
probabilities = predict_pixels(model, pixels, preprocess_spec)
print(json.dumps({"n": len(probabilities), "finite": bool(np.isfinite(probabilities).all()),
                  "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}))
"""


@pytest.mark.slow
def test_scoring_300_full_size_images_with_lite0_stays_under_3_gb():
    done = subprocess.run([*ISOLATED_PYTHON, "-c", SCORE_LITE0], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["n"] == 300 and result["finite"]
    assert result["peak_gb"] < PEAK_LIMIT_GB, f"peak {result['peak_gb']:.2f} GB"


def test_batch_size_follows_the_input_size_and_the_budget(monkeypatch):
    monkeypatch.delenv("EDGECXR_INFERENCE_MEMORY_MB", raising=False)
    lite0, compact = batch_size_for((224, 224, 3)), batch_size_for((64, 64, 1))
    assert 8 <= lite0 <= 64 and compact == 256  # 0.6 MB inputs get small batches, 16 KB ones the cap
    assert batch_size_for((224, 224, 3), budget_bytes=1) == 1
    monkeypatch.setenv("EDGECXR_INFERENCE_MEMORY_MB", "4096")
    assert 3 * lite0 < batch_size_for((224, 224, 3)) <= 4 * lite0 + 3  # four times the budget


def test_batches_cover_every_input_once_in_order():
    inputs = np.arange(10, dtype=np.uint8).reshape(10, 1)
    seen = []

    def predict(batch):
        seen.append(len(batch))
        return batch.astype(np.float64) / 10

    out = predict_in_batches(predict, inputs, batch_size=4, prepare=lambda b: b.astype(np.float32))
    np.testing.assert_allclose(out, np.arange(10) / 10)
    assert seen == [4, 4, 2]
    assert predict_in_batches(predict, inputs[:0]).shape == (0,)
