"""Exact (Clopper-Pearson) confidence bounds for a proportion, in numpy and the standard library.

The edge install has no scipy, so the binomial tail is summed directly (in log space, exact for the
few thousand images a clinic labels) and each bound is found by bisection. Clopper-Pearson rather
than Wilson: its coverage is never below the stated level, which is what a threshold meant to
protect sensitivity needs; Wilson's dips below it for some proportions near 0 or 1.
"""

from __future__ import annotations

import math

import numpy as np

_BISECTION_STEPS = 60  # halves [0, 1] down to about 1e-18


def binomial_pmf(n: int, p: float) -> np.ndarray:
    """P(X = k) for k = 0..n, X ~ Binomial(n, p)."""
    k = np.arange(n + 1)
    if p <= 0.0:
        return (k == 0).astype(np.float64)
    if p >= 1.0:
        return (k == n).astype(np.float64)
    log_choose = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in k])
    return np.exp(log_choose + k * math.log(p) + (n - k) * math.log1p(-p))


def _at_least(successes: int, n: int, p: float) -> float:
    return float(binomial_pmf(n, p)[successes:].sum())


def _solve_increasing(function, target: float) -> float:
    """The p in [0, 1] where an increasing function of p reaches `target`."""
    low, high = 0.0, 1.0
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2.0
        if function(middle) < target:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def _check(successes: int, n: int, confidence: float) -> None:
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, not {successes} of {n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")


def lower_bound(successes: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson lower bound: the true proportion is at least this with `confidence`."""
    _check(successes, n, confidence)
    if successes == 0:
        return 0.0
    # The smallest p under which `successes` or more would happen with probability 1 - confidence.
    return _solve_increasing(lambda p: _at_least(successes, n, p), 1.0 - confidence)


def upper_bound(successes: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound (the lower bound of the failures, mirrored)."""
    return 1.0 - lower_bound(n - successes, n, confidence)


def clopper_pearson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided exact interval: each side leaves out at most (1 - confidence) / 2."""
    one_sided = 1.0 - (1.0 - confidence) / 2.0
    return lower_bound(successes, n, one_sided), upper_bound(successes, n, one_sided)


def proportion(successes: int, n: int) -> dict:
    """A proportion with its exact 95 % interval, as the model card shows it."""
    low, high = clopper_pearson(successes, n) if n else (None, None)
    return {"value": successes / n if n else None, "ci95": [low, high], "successes": successes, "n": n}


def confusion_figures(matrix, threshold: float) -> dict:
    """Accuracy, sensitivity and specificity with their intervals from a 2x2 [[tn, fp], [fn, tp]]."""
    (tn, fp), (fn, tp) = matrix
    return {"threshold": float(threshold), "accuracy": proportion(tn + tp, tn + fp + fn + tp),
            "sensitivity": proportion(tp, tp + fn), "specificity": proportion(tn, tn + fp)}
