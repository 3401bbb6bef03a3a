"""The site monitor's two mean-shift tests, judged against nulls drawn by patient at convert time.

`T = d' S^-1 d / (1/n + 1/N)`: `d` the difference between a batch's mean and a reference's mean of
some monitored numbers, `S` the reference's covariance, `n` and `N` the two sizes. For independent
images `T` is about chi-square with as many degrees of freedom as numbers, whatever `n`. A clinic's
films are not independent: one patient's films look alike, which inflates `T` by a factor that
depends on how many films a patient has rather than on `n`. So each test's null is measured, not
assumed: convert holds out whole validation patients as batches, many times, and records `T` of
each (convert/monitor_nulls.py); the runtime reads a batch's p-value off those records.

The two tests (research/monitor_reference_rule.md, and the notebook's entry on it):
- model outputs: the probability and the leading feature components against the validation
  sample the artifact carries (its own runtime's numbers);
- film layout: the leading input-layout components against every training-split film. The layout
  is the model input's, so training films are a fair reference for it, and ten times as many films
  pin its mean far better than half the validation split could.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import MetadataError
from .stored_numbers import finite_array, rounded

OUTPUTS, LAYOUT = "model outputs", "film layout"
# Significant digits the null draws are stored with: p-values are counted among 2,000 of them.
NULL_DIGITS = 5
MOMENT_DIGITS = 9


@dataclass
class ReferenceMoments:
    """What the statistic needs of a reference: its size, mean, variances and inverse covariance."""

    n: int
    mean: np.ndarray
    covariance: np.ndarray
    precision: np.ndarray = field(repr=False)

    @classmethod
    def of(cls, values) -> "ReferenceMoments":
        values = np.asarray(values, dtype=np.float64)
        return cls.from_moments(len(values), values.mean(axis=0), np.atleast_2d(np.cov(values, rowvar=False)))

    @classmethod
    def from_moments(cls, n: int, mean, covariance) -> "ReferenceMoments":
        # pinv, not inv: an int8 model can leave a monitored number nearly constant over the
        # reference, and that direction must then carry no weight rather than an infinite one.
        covariance = np.atleast_2d(np.asarray(covariance, dtype=np.float64))
        return cls(int(n), np.asarray(mean, dtype=np.float64), covariance, np.linalg.pinv(covariance, hermitian=True))

    def statistic(self, batch) -> float:
        """T of a batch (n, p) against this reference."""
        batch = np.asarray(batch, dtype=np.float64)
        difference = batch.mean(axis=0) - self.mean
        return float(difference @ self.precision @ difference) / (1.0 / len(batch) + 1.0 / self.n)

    def to_dict(self) -> dict:
        return {"n": self.n, "mean": rounded(self.mean, MOMENT_DIGITS),
                "covariance": rounded(self.covariance, MOMENT_DIGITS)}

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "ReferenceMoments":
        try:
            n, mean, covariance = int(data["n"]), finite_array(data["mean"], 1), finite_array(data["covariance"], 2)
        except (KeyError, TypeError, ValueError) as exc:
            raise MetadataError(f"{where} is malformed: {exc}") from None
        if n < 2 or covariance.shape != (mean.size, mean.size):
            raise MetadataError(f"{where} is inconsistent: {n} films, a mean of {mean.size} numbers and a "
                                f"{'x'.join(map(str, covariance.shape))} covariance")
        return cls.from_moments(n, mean, covariance)


@dataclass
class PatientNull:
    """Recorded values of `T` for batches of whole held-out patients (sorted ascending)."""

    statistics: np.ndarray
    batch_size: int  # the size whose 95th percentile was largest (the one kept)
    sizes: tuple[int, ...]  # the sizes drawn
    seed: int

    def p_value(self, t: float) -> float:
        """The share of held-out patient batches at least as far from the reference as this batch
        (the batch itself counted, so never 0)."""
        exceeding = len(self.statistics) - int(np.searchsorted(self.statistics, t, side="left"))
        return (1 + exceeding) / (1 + len(self.statistics))

    def to_dict(self) -> dict:
        return {"batch_size": self.batch_size, "sizes": list(self.sizes), "seed": self.seed,
                "statistics": rounded(self.statistics, NULL_DIGITS)}

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "PatientNull":
        try:
            statistics = finite_array(data["statistics"], 1)
            null = cls(np.sort(statistics), int(data["batch_size"]), tuple(int(s) for s in data["sizes"]),
                       int(data["seed"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise MetadataError(f"{where} is malformed: {exc}") from None
        if len(statistics) < 100 or np.any(statistics < 0):
            raise MetadataError(f"{where} needs at least 100 non-negative draws, not {len(statistics)}")
        return null


@dataclass
class MeanShiftMonitor:
    """Both tests' references and nulls: what an artifact's metadata carries for its site monitor."""

    outputs_null: PatientNull  # against the reference sample the artifact carries
    layout_reference: ReferenceMoments  # the training films' layout components
    layout_null: PatientNull
    description: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"outputs_null": self.outputs_null.to_dict(), "layout_reference": self.layout_reference.to_dict(),
                "layout_null": self.layout_null.to_dict(), "description": self.description}

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "MeanShiftMonitor":
        if not isinstance(data, dict):
            raise MetadataError(f"{where} must be an object")
        return cls(PatientNull.from_dict(data.get("outputs_null"), f"{where}.outputs_null"),
                   ReferenceMoments.from_dict(data.get("layout_reference"), f"{where}.layout_reference"),
                   PatientNull.from_dict(data.get("layout_null"), f"{where}.layout_null"),
                   dict(data.get("description") or {}))
