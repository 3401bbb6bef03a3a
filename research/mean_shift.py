"""A site monitor's mean-shift statistic and its null distribution drawn by patient (research only:
studied as H17 in research/monitor_rule.md, not adopted by that rule; the notebook says why).

`T = d' S^-1 d / (1/n + 1/N)`: `d` the difference between a batch's mean and the reference's mean
of the monitored numbers, `S` the reference's covariance, `n` and `N` the two sizes. For
independent images `T` is about chi-square with as many degrees of freedom as numbers, whatever
`n`. A clinic's films are not independent: one patient's films look alike, which inflates `T` by
a factor that depends on how many films a patient has rather than on `n`. So the null is
measured, not assumed: whole patients of the reference are held out as a batch, many times, and
`T` of each such batch against the rest is recorded (`calibrate_patient_null`: had it been
adopted, convert would have drawn it, knowing the patients, and the runtime would have read it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Batch sizes the null is drawn at; the one whose 95th percentile is largest is kept, so one null
# serves every batch size without being lenient at any of them.
NULL_BATCH_SIZES = (20, 50, 100)
NULL_DRAWS = 2000
# A batch is drawn only where the rest keeps at least this many images per monitored number: the
# covariance it is compared through must be well determined.
REST_PER_DIMENSION = 4


@dataclass
class ReferenceMoments:
    """What the statistic needs of the reference: its size, mean, variances and inverse covariance."""

    n: int
    mean: np.ndarray
    variances: np.ndarray
    precision: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray) -> "ReferenceMoments":
        values = np.asarray(values, dtype=np.float64)
        covariance = np.atleast_2d(np.cov(values, rowvar=False))  # 0-d for a single number
        # pinv, not inv: an int8 model can leave a monitored number nearly constant over the
        # reference, and that direction must then carry no weight rather than an infinite one.
        return cls(len(values), values.mean(axis=0), np.diag(covariance).copy(),
                   np.linalg.pinv(covariance, hermitian=True))

    def _difference(self, batch) -> tuple[np.ndarray, float]:
        batch = np.asarray(batch, dtype=np.float64)
        return batch.mean(axis=0) - self.mean, 1.0 / len(batch) + 1.0 / self.n

    def statistic(self, batch) -> float:
        """T of a batch (n, p) against this reference."""
        difference, scale = self._difference(batch)
        return float(difference @ self.precision @ difference) / scale

    def standardised_differences(self, batch) -> np.ndarray:
        """Each number's mean difference in units of its own standard error: which moved most."""
        difference, scale = self._difference(batch)
        return difference / np.sqrt(np.maximum(self.variances, 1e-300) * scale)


@dataclass
class PatientNull:
    """Recorded values of `T` for batches of whole reference patients against the rest."""

    statistics: np.ndarray  # sorted ascending
    batch_size: int  # the size whose 95th percentile was largest (the one kept)
    sizes: tuple[int, ...]  # the sizes drawn
    draws: int
    seed: int

    def p_value(self, t: float) -> float:
        """The share of held-out patient batches at least as far from the rest as this batch (with
        the batch itself counted, so never 0)."""
        exceeding = len(self.statistics) - int(np.searchsorted(self.statistics, t, side="left"))
        return (1 + exceeding) / (1 + len(self.statistics))


def patient_batch(groups: list[np.ndarray], size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(batch, rest) indices: whole patients in random order until `size` images, the last patient
    cut to fit; the cut patient's other films are in neither (they would tie the batch to the rest)."""
    batch, used = [], 0
    order = rng.permutation(len(groups))
    for position, g in enumerate(order):
        take = groups[g][:size - used]
        batch.append(take)
        used += len(take)
        if used == size:
            rest = [groups[k] for k in order[position + 1:]]
            return np.concatenate(batch), (np.concatenate(rest) if rest else np.zeros(0, dtype=int))
    raise ValueError(f"the groups hold {used} images, fewer than a batch of {size}")


def calibrate_patient_null(values, patients: list[str], seed: int, sizes=NULL_BATCH_SIZES,
                           draws: int = NULL_DRAWS) -> PatientNull | None:
    """The null of `T` from the reference's own patients; None when the reference is too small for
    even the smallest batch (the runtime then keeps the earlier test)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) != len(patients):
        raise ValueError(f"{len(values)} reference rows for {len(patients)} patient names")
    index_of: dict[str, list[int]] = {}
    for row, patient in enumerate(patients):
        index_of.setdefault(patient, []).append(row)
    groups = [np.asarray(rows) for rows in index_of.values()]
    least_rest = REST_PER_DIMENSION * values.shape[1]
    usable = [m for m in sizes if len(values) - m - max(len(g) for g in groups) >= least_rest]
    if not usable:
        return None
    rng = np.random.default_rng(seed)
    kept, kept_size, kept_quantile = None, None, -np.inf
    for size in usable:
        null = np.empty(draws)
        for d in range(draws):
            batch, rest = patient_batch(groups, size, rng)
            null[d] = ReferenceMoments.of(values[rest]).statistic(values[batch])
        quantile = float(np.quantile(null, 0.95))
        if quantile > kept_quantile:
            kept, kept_size, kept_quantile = null, size, quantile
    return PatientNull(np.sort(kept), kept_size, tuple(usable), draws, seed)
