"""The site monitor's nulls, drawn by patient at convert time (the tests themselves:
edge_runtime/mean_shift.py).

Each null holds `T` of many batches of whole held-out patients, each compared with the films not
in it, at 20, 50 and 100 films; the size whose 95th percentile is largest is kept, so one null
serves every batch size without being lenient at any. The model-output test's batches are drawn
from an artifact's calibration images (its own runtime's numbers); the layout test's from the
training split, once per run: the layout depends on the preprocessing alone, and the training
split's ~2,200 patients give its tail far more steadily than the calibration half's ~190 do.
Chosen by research/monitor_reference_rule.md, then research/monitor_training_null_rule.md, on
validation patients and `test/`'s unlabelled images (notebook: "A layout reference from the
training split", "The layout null from training patients").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.mean_shift import MeanShiftMonitor, PatientNull, ReferenceMoments
from edgecxr.train.dataset import patient_id

NULL_BATCH_SIZES = (20, 50, 100)
NULL_DRAWS = 2000
# A batch is drawn only where the rest keeps at least this many images per monitored number: the
# covariance it is compared through must be well determined.
REST_PER_DIMENSION = 4


def patient_groups(paths) -> list[np.ndarray]:
    """Positions of each patient's films in `paths` (patients read from file names)."""
    index_of: dict[str, list[int]] = {}
    for position, path in enumerate(paths):
        index_of.setdefault(patient_id(Path(path)), []).append(position)
    return [np.asarray(rows) for rows in index_of.values()]


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


def strictest_null(draw, sizes, draws: int, seed: int) -> PatientNull:
    """`draws` values of `draw(size, rng)` at each size; the size whose 95th percentile is largest kept."""
    rng = np.random.default_rng(seed)
    kept, kept_size, kept_quantile = None, None, -np.inf
    for size in sizes:
        null = np.array([draw(size, rng) for _ in range(draws)])
        quantile = float(np.quantile(null, 0.95))
        if quantile > kept_quantile:
            kept, kept_size, kept_quantile = null, size, quantile
    return PatientNull(np.sort(kept), kept_size, tuple(sizes), seed)


def refitted_null(values, paths, seed: int, sizes=NULL_BATCH_SIZES, draws: int = NULL_DRAWS) -> PatientNull | None:
    """The null of `T` against a reference made of `values` itself: each batch of held-out patients
    is compared with the rest of them. None when the sample is too small for even the smallest batch."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) != len(paths):
        raise ValueError(f"{len(values)} reference rows for {len(paths)} image paths")
    groups = patient_groups(paths)
    least_rest = REST_PER_DIMENSION * values.shape[1]
    usable = [m for m in sizes if len(values) - m - max(len(g) for g in groups) >= least_rest]
    if not usable:
        return None

    def draw(size, rng):
        batch, rest = patient_batch(groups, size, rng)
        return ReferenceMoments.of(values[rest]).statistic(values[batch])

    return strictest_null(draw, usable, draws, seed)


@dataclass
class LayoutTest:
    """The layout test's reference and null, both from a run's training films (one per run)."""

    reference: ReferenceMoments  # every training film's leading layout components
    null: PatientNull
    description: str  # how the null was drawn, as the metadata says it


def training_layout_test(layouts, paths, seed: int, draws: int = NULL_DRAWS) -> LayoutTest | None:
    """`layouts` (n, m) the training films' layout components, in the order of `paths`. None when
    the split is too small for a null (the runtime then keeps the KS tests)."""
    null = refitted_null(layouts, paths, seed, draws=draws)
    if null is None:
        return None
    description = (f"{len(null.statistics)} batches of whole training patients (of {len(patient_groups(paths))}) "
                   f"against the other training films, at {', '.join(map(str, null.sizes))} films; the largest 95th "
                   f"percentile kept (research/monitor_training_null_rule.md)")
    return LayoutTest(ReferenceMoments.of(layouts), null, description)


def calibrate_monitor(outputs, paths, layout: LayoutTest, seed: int, draws: int = NULL_DRAWS) -> MeanShiftMonitor | None:
    """The model-output test's null from the calibration images (`outputs` (n, 1 + m): their
    probabilities and feature components), beside the run's layout test. None when that null cannot
    be drawn (the runtime then keeps the KS tests)."""
    outputs_null = refitted_null(outputs, paths, seed, draws=draws)
    if outputs_null is None:
        return None
    description = {
        "rule": "research/monitor_reference_rule.md; layout null: research/monitor_training_null_rule.md",
        "statistic": "T = d' S^-1 d / (1/n + 1/N) per test; shift when the smaller p-value is below alpha / 2",
        "outputs_null": (f"{draws} batches of whole calibration patients against the rest of them, at "
                         f"{', '.join(map(str, outputs_null.sizes))} films; the largest 95th percentile kept"),
        "layout_reference": f"the layout components of {layout.reference.n} training-split films",
        "layout_null": layout.description,
    }
    return MeanShiftMonitor(outputs_null, layout.reference, layout.null, description)
