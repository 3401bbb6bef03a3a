"""The threshold a site should use: the validated one, unless the site's own labelled films give
evidence to move it. Commissioning must never make a site worse than not commissioning.

The evidence, exact binomial and one-sided at 95 % (Clopper-Pearson), on the site's PNEUMONIA films:

- **Lower** when sensitivity at the validated threshold is shown to be below the target (its upper
  bound is under it): to the supported threshold below (next paragraph), or, with too few positives
  for one, just under the lowest-scored positive (conservative: none of them missed).
- **Raise** only when the evidence supports the target at a higher threshold: the highest threshold
  whose lower bound of sensitivity is still at least the target (an order statistic: with n
  positives it may pass over the m lowest-scored, m the largest with P(Binomial(n, 1 - target) <= m)
  <= 1 - confidence; it holds for any score distribution).
- **Keep** the validated threshold otherwise, and say how many more labelled PNEUMONIA films, all
  found at it, would show the target there.

The rule it replaces moved the threshold to the supported one whatever it was: with about 60
positives the bound allows no miss, so the threshold dropped under the lowest-scored positive and
specificity paid (issue 32: at 100 test/ films it lowered accuracy in most draws).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .intervals import binomial_pmf, lower_bound, upper_bound
from .metrics import pick_threshold

CONFIDENCE = 0.95
KEPT, LOWERED, RAISED = "kept", "lowered", "raised"
RAISE_RULE = ("raised: the highest threshold whose one-sided {confidence:.0%} Clopper-Pearson lower bound of "
              "sensitivity on the site's PNEUMONIA images is at least {target:g} (it may miss the {misses} "
              "lowest-scored of {positives})")
LOWER_RULE = ("lowered: at the validated threshold the site's sensitivity is below {target:g} at {confidence:.0%} "
              "confidence ({caught} of {positives} PNEUMONIA images found, upper bound {upper:.3f}); now {how}")
LOWER_SUPPORTED = "the highest threshold whose lower bound of sensitivity is at least {target:g}"
LOWER_ALL = "just under the lowest-scored PNEUMONIA image (too few to support a bound: {needed} needed)"
KEEP_RULE = ("kept the validated threshold: {caught} of {positives} PNEUMONIA images found at it (sensitivity "
             "{low:.3f} to {upper:.3f} at {confidence:.0%}) show neither a shortfall nor the target at a higher "
             "threshold; {more}")
MORE = "{more} more PNEUMONIA image(s), all found at it, would show sensitivity >= {target:g} there"
SHOWN = "they show sensitivity >= {target:g} there"


@dataclass(frozen=True)
class SiteThreshold:
    threshold: float
    supported: bool  # whether the positives are enough for the lower-bound threshold to exist
    positives: int
    allowed_misses: int | None  # positives the lower-bound threshold lets fall below it (None: unsupported)
    positives_needed: int  # the fewest positives with which the lower bound can reach the target
    sensitivity_lower_bound: float  # one-sided bound at `threshold` on these positives
    rule: str
    decision: str = KEPT  # kept | lowered | raised
    caught_at_validated: int = 0
    upper_bound_at_validated: float = 1.0
    more_positives_needed: int | None = None  # kept: more positives, all found, that would show the target

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


def more_positives_to_show(caught: int, positives: int, target: float, confidence: float = CONFIDENCE,
                           limit: int = 100_000) -> int:
    """Fewest extra positives, all caught, after which the lower bound at these counts reaches `target`."""
    if positives and lower_bound(caught, positives, confidence) >= target:
        return 0
    low, high = 1, 1
    while lower_bound(caught + high, positives + high, confidence) < target:
        low, high = high + 1, high * 2
        if high > limit:
            return limit
    while low < high:  # the bound rises with every positive caught: bisect for the first that reaches it
        middle = (low + high) // 2
        if lower_bound(caught + middle, positives + middle, confidence) >= target:
            high = middle
        else:
            low = middle + 1
    return high


def choose_site_threshold(y_true, probabilities, validated_threshold: float, target: float = 0.95,
                          confidence: float = CONFIDENCE) -> SiteThreshold:
    """The site threshold for these labelled probabilities (y_true: True for PNEUMONIA)."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1), not {target}")
    y_true = np.asarray(y_true, dtype=bool)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    scores = probabilities[y_true]
    positives, validated = int(y_true.sum()), float(validated_threshold)
    needed = positives_needed(target, confidence)
    misses = allowed_misses(positives, target, confidence) if positives else None
    # pick_threshold at the sample sensitivity (n - m) / n puts the threshold just under the (m + 1)-th
    # lowest positive: at most m positives fall below it.
    supported = None if misses is None else pick_threshold(y_true, probabilities, (positives - misses) / positives)
    caught = int(np.sum(scores >= validated))
    upper = upper_bound(caught, positives, confidence) if positives else 1.0
    words = {"confidence": confidence, "target": target, "positives": positives, "caught": caught, "upper": upper}
    more = None
    if positives and upper < target:
        decision = LOWERED
        if supported is not None:
            threshold, how = min(supported, validated), LOWER_SUPPORTED.format(**words)
        else:
            threshold, how = min(float(np.nextafter(scores.min(), -np.inf)), validated), LOWER_ALL.format(needed=needed)
        rule = LOWER_RULE.format(how=how, **words)
    elif supported is not None and supported > validated:
        decision, threshold = RAISED, supported
        rule = RAISE_RULE.format(misses=misses, **words)
    else:
        decision, threshold = KEPT, validated
        more = more_positives_to_show(caught, positives, target, confidence)
        low = lower_bound(caught, positives, confidence) if positives else 0.0
        rule = KEEP_RULE.format(low=low, more=(SHOWN if more == 0 else MORE).format(more=more, target=target),
                                **words)
    found = int(np.sum(scores >= threshold))
    bound = lower_bound(found, positives, confidence) if positives else 0.0
    return SiteThreshold(threshold, misses is not None, positives, misses, needed, bound, rule, decision,
                         caught, upper, more)
