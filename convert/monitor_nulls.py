"""The site monitor's nulls, drawn by patient from an artifact's calibration images at convert time
(the tests themselves: edge_runtime/mean_shift.py).

Each null holds `T` of many batches of whole held-out calibration patients, at 20, 50 and 100
films; the size whose 95th percentile is largest is kept, so one null serves every batch size
without being lenient at any. Chosen by research/monitor_reference_rule.md on validation patients
and `test/`'s unlabelled images (notebook: "A layout reference from the training split").
"""

from __future__ import annotations

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


def _strictest(draw, sizes, draws: int, seed: int) -> PatientNull:
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

    return _strictest(draw, usable, draws, seed)


def fixed_reference_null(moments: ReferenceMoments, values, paths, seed: int, sizes=NULL_BATCH_SIZES,
                         draws: int = NULL_DRAWS) -> PatientNull | None:
    """The null of `T` against a reference that stays as it is (films it never held), as a site's
    batches meet it. None when `values` hold fewer films than the smallest batch."""
    values = np.asarray(values, dtype=np.float64)
    groups = patient_groups(paths)
    usable = [m for m in sizes if m <= len(values)]
    if not usable:
        return None
    return _strictest(lambda size, rng: moments.statistic(values[patient_batch(groups, size, rng)[0]]),
                      usable, draws, seed)


def calibrate_monitor(outputs, layouts, paths, layout_reference: ReferenceMoments, seed: int,
                      draws: int = NULL_DRAWS) -> MeanShiftMonitor | None:
    """Both nulls from the calibration images: `outputs` (n, 1 + m) their probabilities and feature
    components, `layouts` (n, m) their layout components. None when either cannot be drawn (the
    runtime then keeps the KS tests)."""
    outputs_null = refitted_null(outputs, paths, seed, draws=draws)
    layout_null = fixed_reference_null(layout_reference, layouts, paths, seed, draws=draws)
    if outputs_null is None or layout_null is None:
        return None
    description = {
        "rule": "research/monitor_reference_rule.md",
        "statistic": "T = d' S^-1 d / (1/n + 1/N) per test; shift when the smaller p-value is below alpha / 2",
        "outputs_null": (f"{draws} batches of whole calibration patients against the rest of them, at "
                         f"{', '.join(map(str, outputs_null.sizes))} films; the largest 95th percentile kept"),
        "layout_reference": f"the layout components of {layout_reference.n} training-split films",
        "layout_null": (f"{draws} batches of whole calibration patients against the training films, at "
                        f"{', '.join(map(str, layout_null.sizes))} films; the largest 95th percentile kept"),
    }
    return MeanShiftMonitor(outputs_null, layout_reference, layout_null, description)
