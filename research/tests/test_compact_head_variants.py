"""The study's candidates build the nets its rule names, and the adopted one is the default."""

from __future__ import annotations

import pytest

pytest.importorskip("keras")

from edgecxr.train.models import compact_cnn  # noqa: E402
from research.compact_head_variants import CANDIDATES  # noqa: E402


def _shape(model) -> tuple:
    """Layer names and the map the global pooling averages."""
    names = [layer.name for layer in model.layers]
    pool = model.get_layer("pool")
    return names, tuple(pool.input.shape[1:])


def test_the_adopted_candidate_is_the_default_net():
    assert _shape(compact_cnn(**CANDIDATES["C4"])) == _shape(compact_cnn())
    names, feature_map = _shape(compact_cnn())
    assert feature_map == (16, 16, 64) and "dropout1" not in names and "block3_pool" not in names


def test_the_baseline_rebuilds_the_earlier_net():
    names, feature_map = _shape(compact_cnn(**CANDIDATES["B"]))
    assert feature_map == (8, 8, 64) and "dropout1" in names and "block3_pool" in names
    assert compact_cnn(**CANDIDATES["B"]).count_params() == compact_cnn().count_params()


def test_each_candidate_differs_from_the_baseline():
    baseline = _shape(compact_cnn(**CANDIDATES["B"]))
    for name in ("C1", "C2", "C3", "C4"):
        assert _shape(compact_cnn(**CANDIDATES[name])) != baseline, name
