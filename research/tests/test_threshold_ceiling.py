"""The threshold ceiling: the best accuracy any threshold gives, checked against hand-counted cases."""

import numpy as np

from research.threshold_ceiling import best_threshold_accuracy


def test_best_threshold_accuracy_is_the_hand_counted_maximum():
    labels = np.array([0, 0, 0, 1, 1, 1])
    probabilities = np.array([0.1, 0.4, 0.7, 0.3, 0.8, 0.9])
    # t=0.8: NORMAL 0.1, 0.4, 0.7, 0.3 -> 3 right + 2 PNEUMONIA right = 5 of 6; nothing does better.
    accuracy, threshold = best_threshold_accuracy(labels, probabilities)
    assert accuracy == 5 / 6 and threshold == 0.8


def test_all_normal_counts_as_a_threshold():
    labels = np.array([0, 0, 0, 1])
    probabilities = np.array([0.9, 0.8, 0.7, 0.1])  # ranked backwards: calling all NORMAL is best
    assert best_threshold_accuracy(labels, probabilities) == (0.75, np.inf)
