"""The threshold a site may use: the highest one its own labelled PNEUMONIA films justify.

Rule (exact binomial, one-sided 95 %): the highest threshold at which the Clopper-Pearson lower
confidence bound of sensitivity on the site's PNEUMONIA images is still at least the target. It
is the same as an order-statistic rule on the positives' probabilities: with n positives, the
threshold may pass over (miss) the m lowest-scored ones, m the largest count with
P(Binomial(n, 1 - target) <= m) <= 1 - confidence. That rule holds for any distribution of scores
(it needs only that the site's future positives are like the ones labelled), so it cannot be
fooled by an odd-looking score distribution; a threshold read off the sample sensitivity alone
would miss the target about half the time.

With too few positives the bound cannot reach the target even with none missed (59 are needed
for 0.95 at 95 % confidence): the evidence supports no threshold, so the validated one is kept
(never raised) and the result says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .intervals import binomial_pmf, lower_bound
from .metrics import pick_threshold

CONFIDENCE = 0.95
RULE = ("highest threshold whose one-sided {confidence:.0%} Clopper-Pearson lower bound of sensitivity on "
        "the site's PNEUMONIA images is at least {target:g} (order statistic: it may miss the {misses} "
        "lowest-scored of {positives})")
KEPT = ("kept the validated threshold: {positives} PNEUMONIA image(s) cannot show sensitivity >= {target:g} "
        "at {confidence:.0%} confidence even with none missed (needs at least {needed})")


@dataclass(frozen=True)
class SiteThreshold:
    threshold: float
    supported: bool  # False: too few positives, the validated threshold was kept
    positives: int
    allowed_misses: int | None  # positives the rule lets fall below the threshold (None: unsupported)
    positives_needed: int  # the fewest positives with which the rule can reach the target
    sensitivity_lower_bound: float  # one-sided bound at `threshold` on these positives
    rule: str

    def to_dict(self) -> dict:
        return asdict(self)


def positives_needed(target: float, confidence: float = CONFIDENCE) -> int | None:
    """Fewest positives, all caught, whose lower bound reaches `target` (None: target 1 is never shown)."""
    if target >= 1.0:
        return None
    return math.ceil(math.log(1.0 - confidence) / math.log(target) - 1e-12)


def allowed_misses(positives: int, target: float, confidence: float = CONFIDENCE) -> int | None:
    """Largest m with P(Binomial(positives, 1 - target) <= m) <= 1 - confidence; None if even 0 fails."""
    chance_of_at_most = np.cumsum(binomial_pmf(positives, 1.0 - target))
    fits = np.nonzero(chance_of_at_most <= 1.0 - confidence + 1e-12)[0]
    return int(fits[-1]) if fits.size else None


def choose_site_threshold(y_true, probabilities, validated_threshold: float, target: float = 0.95,
                          confidence: float = CONFIDENCE) -> SiteThreshold:
    """The site threshold for these labelled probabilities (y_true: True for PNEUMONIA)."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1), not {target}")
    y_true = np.asarray(y_true, dtype=bool)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    positives = int(y_true.sum())
    needed = positives_needed(target, confidence)
    misses = allowed_misses(positives, target, confidence) if positives else None
    if misses is None:
        threshold = float(validated_threshold)
        rule = KEPT.format(positives=positives, target=target, confidence=confidence, needed=needed)
    else:
        # pick_threshold at the sample sensitivity (n - m) / n puts the threshold just under the
        # (m + 1)-th lowest positive: at most m positives fall below it.
        threshold = pick_threshold(y_true, probabilities, (positives - misses) / positives)
        rule = RULE.format(confidence=confidence, target=target, misses=misses, positives=positives)
    caught = int(np.sum(probabilities[y_true] >= threshold))
    bound = lower_bound(caught, positives, confidence) if positives else 0.0
    return SiteThreshold(threshold, misses is not None, positives, misses, needed, bound, rule)
