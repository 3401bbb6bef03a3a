"""Do a site's images look like the ones the model was validated on? Two tests per batch.

A difference means the model's validated sensitivity and specificity may not hold at this site.
Artifacts converted since 2026-12-07 carry two mean-shift tests whose nulls were drawn by patient
(edge_runtime/mean_shift.py): the model's outputs (probability and leading feature components)
against the validation sample stored with the model, and the film layout against the training
films; shift when either p-value is below alpha / 2 (Bonferroni). They keep false alarms near
alpha on batches of whole patients, where the earlier tests did not.

Older artifacts keep the earlier monitor, as in "Failing Loudly" (Rabanser et al., 2019): one
univariate Kolmogorov-Smirnov test on the probabilities and one per monitored component, against
the stored validation sample, Bonferroni over all 17.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .feature_reference import FEATURES, MIN_REFERENCE_IMAGES, FeatureReference
from .mean_shift import LAYOUT, OUTPUTS, MeanShiftMonitor
from .two_sample_ks import ks_2samp

# Family-wise false-alarm rate over all the tests of one batch.
ALPHA = 0.05
# Fewer images than this and a real difference would rarely be detected: say so instead.
MIN_BATCH = 20
# What to do about it: check the model on the site's own labelled films, which `edgecxr commission` does.
SHIFT_MESSAGE = ("images from this site differ from the training images; specificity may be lower than "
                 "validated; commission the model on labelled films from this site (edgecxr commission)")

SHIFT, NO_SHIFT, TOO_FEW, UNAVAILABLE = "shift", "no_shift_detected", "needs_more_images", "unavailable"
MEAN_SHIFT, KS = "mean shift, nulls drawn by patient", "Kolmogorov-Smirnov, Bonferroni"


@dataclass
class MonitorResult:
    verdict: str  # shift | no_shift_detected | needs_more_images | unavailable
    message: str
    n_images: int
    n_reference: int = 0
    statistic: float | None = None  # the statistic of the test with the smallest p-value
    p_value: float | None = None  # that smallest p-value times the number of tests (Bonferroni), at most 1
    strongest: str | None = None  # which test: "model outputs" or "film layout" (KS: "probability", "<view> component N")
    alpha: float = ALPHA
    tests: list[dict] = field(default_factory=list)  # every test: name, statistic, p_value (unadjusted)
    method: str | None = None  # MEAN_SHIFT or KS

    def to_dict(self) -> dict:
        return asdict(self)


def unavailable(why: str, n_images: int) -> MonitorResult:
    return MonitorResult(UNAVAILABLE, f"site monitor unavailable: {why}", n_images)


def compare_with_reference(reference: FeatureReference | None, projections, probabilities,
                           alpha: float = ALPHA, min_batch: int = MIN_BATCH) -> MonitorResult:
    """The batch (its images' monitored projections and probabilities) against the reference: the
    mean-shift tests where the artifact carries them, else the earlier KS tests."""
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    n = len(probabilities)
    if reference is None:
        return unavailable("the model carries no feature reference (re-export it with edgecxr convert)", n)
    if not reference.monitor_available:
        return unavailable(f"its reference holds {len(reference.reference_probabilities)} validation images "
                           f"(needs {MIN_REFERENCE_IMAGES})", n)
    n_reference = len(reference.reference_probabilities)
    if n < min_batch:
        return MonitorResult(TOO_FEW, f"the site monitor needs at least {min_batch} X-rays from one site to "
                                      f"compare with the training images; this batch has {n}", n, n_reference)
    projections = np.asarray(projections, dtype=np.float64).reshape(n, -1)
    if reference.mean_shift is not None:
        results = mean_shift_tests(reference, reference.mean_shift, projections, probabilities)
        return _verdict(results, n, n_reference, alpha, MEAN_SHIFT)
    expected = reference.monitored_reference()
    # Compared as the float32 the runtimes output: an int8 model's discrete probabilities must tie
    # with the stored ones (which keep exactly their float32 values), not differ in the 9th digit.
    tests = [("probability", reference.reference_probabilities.astype(np.float32), probabilities.astype(np.float32))]
    tests += [(name, expected[:, j], projections[:, j]) for j, name in enumerate(reference.monitored_names())]
    results = []
    for name, expected, observed in tests:
        statistic, p_value = ks_2samp(observed, expected)
        results.append({"name": name, "statistic": round(statistic, 4), "p_value": float(f"{p_value:.4g}")})
    return _verdict(results, n, n_reference, alpha, KS)


def mean_shift_tests(reference: FeatureReference, monitor: MeanShiftMonitor, projections, probabilities) -> list[dict]:
    """The two tests' statistics and p-values: the outputs against the stored validation sample, the
    layout components (the columns of `projections` after the feature components) against the
    training films."""
    n_features = reference.spaces[FEATURES].reference_projections.shape[1]
    results = []
    for name, moments, null, batch in (
            (OUTPUTS, reference.outputs_moments, monitor.outputs_null,
             np.column_stack([probabilities, projections[:, :n_features]])),
            (LAYOUT, monitor.layout_reference, monitor.layout_null, projections[:, n_features:])):
        statistic = moments.statistic(batch)
        results.append({"name": name, "statistic": round(statistic, 4), "p_value": float(f"{null.p_value(statistic):.4g}")})
    return results


def _verdict(results: list[dict], n: int, n_reference: int, alpha: float, method: str) -> MonitorResult:
    strongest = min(results, key=lambda r: r["p_value"])
    adjusted = min(1.0, strongest["p_value"] * len(results))
    shifted = adjusted < alpha
    message = SHIFT_MESSAGE if shifted else (
        f"no difference from the validation images detected ({n} images, {len(results)} tests)")
    return MonitorResult(SHIFT if shifted else NO_SHIFT, message, n, n_reference, strongest["statistic"],
                         float(f"{adjusted:.4g}"), strongest["name"], alpha, results, method)
