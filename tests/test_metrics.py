"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from edgecxr.edge_runtime.metrics import binary_metrics, pick_threshold, roc_auc


def test_binary_metrics_match_a_hand_computed_confusion_matrix():
    # 3 NORMAL (0) and 5 PNEUMONIA (1); threshold 0.5.
    y = [0, 0, 0, 1, 1, 1, 1, 1]
    p = [0.1, 0.6, 0.4, 0.9, 0.8, 0.3, 0.7, 0.5]
    m = binary_metrics(y, p, 0.5)
    # tn: 0.1, 0.4 -> 2; fp: 0.6 -> 1; fn: 0.3 -> 1; tp: 0.9, 0.8, 0.7, 0.5 -> 4
    assert m["confusion_matrix"] == [[2, 1], [1, 4]]
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(4 / 5)
    assert m["sensitivity"] == pytest.approx(4 / 5)
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(0.8)
    # AUC = fraction of (pos, neg) pairs ranked correctly: 12 of 15.
    assert m["roc_auc"] == pytest.approx(12 / 15)
    assert m["n_images"] == 8 and m["threshold"] == 0.5


def test_roc_auc_counts_ties_as_half():
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_pick_threshold_is_the_highest_meeting_the_target_sensitivity():
    y = np.array([1] * 20 + [0] * 10)
    p = np.r_[np.linspace(0.99, 0.40, 20), np.linspace(0.45, 0.0, 10)]
    t = pick_threshold(y, p, 0.95)
    assert (p[y == 1] >= t).mean() >= 0.95
    # Any higher threshold (the next positive up) would miss a second positive.
    assert (p[y == 1] >= np.sort(p[y == 1])[2]).mean() < 0.95
    assert t > p[y == 1].min()  # 19 of 20 suffice: the lowest positive may be missed
