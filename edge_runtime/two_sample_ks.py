"""The two-sample Kolmogorov-Smirnov test in numpy (the edge install has no scipy).

The statistic is the largest gap between the two empirical distribution functions; its p-value
comes from the asymptotic Kolmogorov distribution of sqrt(n m / (n + m)) * D, which is accurate
for the batch sizes the site monitor uses (20 images and more against a few hundred).
"""

from __future__ import annotations

import math

import numpy as np

# Below this the alternating series for P(K > x) needs many terms; the theta-function form of
# P(K <= x) converges in a few instead (the switch point Numerical Recipes uses).
_SERIES_SWITCH = 1.18


def ks_statistic(a, b) -> float:
    """sup |F_a(x) - F_b(x)| over all x; ties within or across the samples are handled exactly."""
    a = np.sort(np.asarray(a, dtype=np.float64).reshape(-1))
    b = np.sort(np.asarray(b, dtype=np.float64).reshape(-1))
    if len(a) == 0 or len(b) == 0:
        raise ValueError("both samples need at least one value")
    # Both distribution functions jump only at observed values: evaluating them just after every
    # pooled value (side="right") finds the supremum.
    pooled = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, pooled, side="right") / len(a)
    cdf_b = np.searchsorted(b, pooled, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution (the limit law of sqrt(n) times the KS statistic)."""
    if x <= 0.0:
        return 1.0
    if x < _SERIES_SWITCH:
        # P(K <= x) = sqrt(2 pi) / x * sum_{j>=1} exp(-(2j - 1)^2 pi^2 / (8 x^2))
        terms = [math.exp(-((2 * j - 1) ** 2) * math.pi ** 2 / (8 * x * x)) for j in range(1, 8)]
        return float(min(1.0, max(0.0, 1.0 - math.sqrt(2 * math.pi) / x * sum(terms))))
    # P(K > x) = 2 sum_{j>=1} (-1)^(j-1) exp(-2 j^2 x^2)
    total = sum((-1) ** (j - 1) * math.exp(-2 * j * j * x * x) for j in range(1, 101))
    return float(min(1.0, max(0.0, 2 * total)))


def ks_2samp(a, b) -> tuple[float, float]:
    """(statistic, asymptotic p-value) of the two-sample KS test of 'a and b share one distribution'."""
    statistic = ks_statistic(a, b)
    n, m = np.asarray(a).size, np.asarray(b).size
    effective = math.sqrt(n * m / (n + m))
    return statistic, kolmogorov_sf(effective * statistic)
