"""How arrays of numbers are written into a model's metadata and checked when read back: one
place for the rounding and the refusal of malformed lists, shared by every block that stores them."""

from __future__ import annotations

import numpy as np


def rounded(values, digits: int):
    """Nested lists of floats with `digits` significant digits (what the JSON holds)."""
    if np.ndim(values) == 0:
        return float(f"{float(values):.{digits}g}")
    return [rounded(v, digits) for v in values]


def finite_array(values, ndim: int, allow_empty: bool = False) -> np.ndarray:
    """The stored list as a float64 array; ValueError unless it is finite and `ndim`-dimensional."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0 and allow_empty:
        return array.reshape((0,) * ndim)
    if array.ndim != ndim or not np.all(np.isfinite(array)):
        raise ValueError(f"expected a finite {ndim}-d array of numbers")
    return array
