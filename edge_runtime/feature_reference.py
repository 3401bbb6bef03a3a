"""What chest X-rays look like to the model: the reference the learned input check and the site
monitor compare every image with. It travels in the model's metadata (`feature_reference`).

Two views of what the model sees, each measured in a principal-component basis fitted at convert
time on training-split images:

- `features`: the model's penultimate features (its global-average-pooling output), exported as a
  second output of the TFLite and ONNX graphs. What the model has learned to look at.
- `input_layout`: the model's input averaged over an 8x8 grid (after the one preprocessing, so
  equalised). The layout and polarity of a chest film: spine in the middle, dark lungs either side.
  The features alone let most inverted films through (their pooled features stay plausible).

An image's score in a view is its squared Mahalanobis distance inside the top components plus its
squared residual outside them, scaled by the mean variance there (the negative log-likelihood of
probabilistic PCA, up to constants). Each view refuses above its own threshold, set on validation
images in the artifact's own runtime so that each refuses at most half the allowed share of X-rays
(together at most `REFUSAL_RATE`). The same validation images' coordinates along the leading
components, and their probabilities, are the site monitor's reference sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .errors import MetadataError
from .mean_shift import MeanShiftMonitor, ReferenceMoments
from .stored_numbers import finite_array, rounded

FEATURES, INPUT_LAYOUT = "features", "input_layout"
SPACES = (FEATURES, INPUT_LAYOUT)
DEFAULT_COMPONENTS = 16
# Components per view the site monitor tests (the leading ones carry most of the variance; each
# test more makes the Bonferroni correction stricter).
MONITORED_COMPONENTS = 8
# The share of genuine X-rays the learned check may refuse (split between the two views).
REFUSAL_RATE = 0.01
# The site monitor compares batches with this many reference images at the least.
MIN_REFERENCE_IMAGES = 20
LAYOUT_GRID = 8
LAYOUT_CHUNK = 64
# Numbers are stored with 6 significant digits: float32 features carry little more. Probabilities
# keep 9, enough to give back their exact float32 values: an int8 model's probabilities take a few
# discrete values, and the monitor's KS test must see a batch's values tie with the reference's.
SIGNIFICANT_DIGITS = 6
FLOAT32_DIGITS = 9


def input_layout(inputs) -> np.ndarray:
    """(N, H, W, C) model inputs -> (N, 64): the mean input over each cell of an 8x8 grid.

    `inputs` may be any array-like that slices into arrays (convert holds its image sets as uint8
    that scale when sliced): it is read a slice at a time, never copied whole."""
    if not hasattr(inputs, "shape"):
        inputs = np.asarray(inputs)
    n, height, width = inputs.shape[:3]
    cell_h, cell_w = height // LAYOUT_GRID, width // LAYOUT_GRID
    if cell_h < 1 or cell_w < 1:
        raise ValueError(f"inputs of {height}x{width} are smaller than the {LAYOUT_GRID}x{LAYOUT_GRID} grid")
    # A slice of images at a time, summed in float64: a float64 copy of 1,000 Lite0 inputs at once
    # was 1.2 GB and set convert's peak memory. Sizes that are not multiples of 8 lose their last few
    # rows and columns: a sliver of border.
    layouts = []
    for start in range(0, n, LAYOUT_CHUNK):
        chunk = inputs[start:start + LAYOUT_CHUNK, :cell_h * LAYOUT_GRID, :cell_w * LAYOUT_GRID]
        grid = chunk.mean(axis=3, dtype=np.float64)
        layouts.append(grid.reshape(len(chunk), LAYOUT_GRID, cell_h, LAYOUT_GRID, cell_w).mean(axis=(2, 4)))
    return np.concatenate(layouts).reshape(n, -1) if layouts else np.zeros((0, LAYOUT_GRID ** 2))


def conformal_threshold(scores, refusal_rate: float) -> float | None:
    """The score above which at most `refusal_rate` of new images like `scores` are refused.

    The ceil((n + 1)(1 - rate))-th smallest calibration score: for a new image exchangeable with
    the calibration images, P(score > threshold) <= rate (split conformal prediction). With fewer
    than 1/rate - 1 calibration images no score qualifies and None is returned: the check cannot
    be calibrated to that rate.
    """
    ordered = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
    rank = _conformal_rank(len(ordered), refusal_rate)
    if len(ordered) == 0 or rank > len(ordered):
        return None
    return float(ordered[rank - 1])


def _conformal_rank(n: int, refusal_rate: float) -> int:
    # The tolerance keeps e.g. 200 * 0.995 from rounding up to 200.00000000000003 -> 201.
    return math.ceil((n + 1) * (1.0 - refusal_rate) - 1e-9)


def min_calibration_images(refusal_rate: float) -> int:
    """The fewest calibration images for which `conformal_threshold` is defined."""
    n = 1
    while _conformal_rank(n, refusal_rate) > n:
        n += 1
    return n


@dataclass
class FeatureBasis:
    """Principal components of training vectors: the space images are measured in."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), orthonormal rows, largest variance first
    variances: np.ndarray  # (k,) variance along each component
    residual_variance: float  # mean variance per dimension outside the k components

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def project(self, vectors) -> np.ndarray:
        """(N, D) -> (N, k) coordinates along the components."""
        return (self._checked(vectors) - self.mean) @ self.components.T

    def score(self, vectors) -> np.ndarray:
        """(N, D) -> (N,) Mahalanobis distance inside the components plus scaled residual, squared."""
        centred = self._checked(vectors) - self.mean
        coordinates = centred @ self.components.T
        residual = centred - coordinates @ self.components
        inside = np.sum(coordinates ** 2 / self.variances, axis=1)
        outside = np.sum(residual ** 2, axis=1) / self.residual_variance
        return inside + outside

    def _checked(self, vectors) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors of shape {vectors.shape} do not match the basis' {self.dim} dimensions")
        return vectors


def fit_basis(vectors, n_components: int = DEFAULT_COMPONENTS) -> FeatureBasis:
    """The top principal components of `vectors` (N, D) and the variance left outside them."""
    vectors = np.asarray(vectors, dtype=np.float64)
    n, dim = vectors.shape
    if n < 3:
        raise ValueError(f"a basis needs at least 3 images, not {n}")
    mean = vectors.mean(axis=0)
    _, singular, directions = np.linalg.svd(vectors - mean, full_matrices=False)
    spectrum = singular ** 2 / (n - 1)
    total = float(spectrum.sum())
    # A dead unit (always 0 after ReLU) or a small fitting set leaves components without variance;
    # they would divide by zero, and their direction says nothing.
    floor = max(total, 1e-12) * 1e-6
    k = int(min(n_components, np.count_nonzero(spectrum > floor), dim - 1))
    if k < 1:
        raise ValueError("the vectors do not vary: no basis can be fitted")
    # Outside the k components: the variance left, spread over the remaining dimensions.
    residual = max((total - float(spectrum[:k].sum())) / (dim - k), floor)
    return FeatureBasis(mean, directions[:k].copy(), spectrum[:k].copy(), float(residual))


@dataclass
class ReferenceSpace:
    """One view: its basis, its refusal threshold and the reference images' monitored coordinates."""

    basis: FeatureBasis
    refusal_threshold: float | None  # None: too few calibration images to refuse at its rate
    reference_projections: np.ndarray  # (n, m): validation images along the first m components

    def to_dict(self) -> dict:
        b, digits = self.basis, SIGNIFICANT_DIGITS
        return {"dim": b.dim, "n_components": b.n_components,
                "refusal_threshold": None if self.refusal_threshold is None else rounded(self.refusal_threshold, digits),
                "mean": rounded(b.mean, digits), "components": rounded(b.components, digits),
                "variances": rounded(b.variances, digits), "residual_variance": rounded(b.residual_variance, digits),
                "reference_projections": rounded(self.reference_projections, digits)}

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "ReferenceSpace":
        try:
            mean = finite_array(data["mean"], 1)
            components = finite_array(data["components"], 2)
            variances = finite_array(data["variances"], 1)
            residual = float(data["residual_variance"])
            projections = finite_array(data["reference_projections"], 2, allow_empty=True)
            threshold = None if data["refusal_threshold"] is None else float(data["refusal_threshold"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MetadataError(f"{where} is malformed: {exc}") from None
        k, dim = components.shape
        problems = []
        if k < 1 or dim != mean.size or variances.size != k:
            problems.append(f"{k} components of {dim} values, a mean of {mean.size} and {variances.size} variances")
        if projections.size and projections.shape[1] > k:
            problems.append(f"reference projections have {projections.shape[1]} columns for {k} components")
        if not (np.all(variances > 0) and residual > 0 and (threshold is None or threshold > 0)):
            problems.append("variances and the refusal threshold must be positive")
        if problems:
            raise MetadataError(f"{where} is inconsistent: {'; '.join(problems)}")
        return cls(FeatureBasis(mean, components, variances, residual), threshold, projections)


@dataclass
class FeatureReference:
    """Both views, the reference images' probabilities, and how it was all calibrated."""

    spaces: dict[str, ReferenceSpace]  # FEATURES and INPUT_LAYOUT
    reference_probabilities: np.ndarray  # (n,): the validation images' P(positive), same artifact
    calibration: dict = field(default_factory=dict)  # how it was made: images, seed, rule
    # The site monitor's tests (edge_runtime/mean_shift.py); None in artifacts made before them,
    # whose monitor falls back to KS tests on the reference sample.
    mean_shift: MeanShiftMonitor | None = None

    @property
    def feature_dim(self) -> int:
        return self.spaces[FEATURES].basis.dim

    @property
    def learned_check_available(self) -> bool:
        return all(space.refusal_threshold is not None for space in self.spaces.values())

    @property
    def monitor_available(self) -> bool:
        return len(self.reference_probabilities) >= MIN_REFERENCE_IMAGES

    def vectors(self, features, inputs) -> dict[str, np.ndarray]:
        """What each view measures, for a batch: the features, and the inputs' 8x8 layout."""
        return {FEATURES: np.asarray(features, dtype=np.float64), INPUT_LAYOUT: input_layout(inputs)}

    def distances(self, vectors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each view's score in units of its refusal threshold (above 1: refused)."""
        if not self.learned_check_available:
            raise ValueError("this reference has no refusal thresholds")
        return {name: space.basis.score(vectors[name]) / space.refusal_threshold
                for name, space in self.spaces.items()}

    def monitored(self, vectors: dict[str, np.ndarray]) -> np.ndarray:
        """(N, m) coordinates the site monitor tests: the leading components of each view."""
        return np.concatenate([space.basis.project(vectors[name])[:, :space.reference_projections.shape[1]]
                               for name, space in self.spaces.items()], axis=1)

    def monitored_names(self) -> list[str]:
        return [f"{name} component {j + 1}" for name, space in self.spaces.items()
                for j in range(space.reference_projections.shape[1])]

    def monitored_reference(self) -> np.ndarray:
        return np.concatenate([space.reference_projections for space in self.spaces.values()], axis=1)

    @cached_property
    def outputs_moments(self) -> ReferenceMoments:
        """The monitor's model-output reference (each stored film's probability, then its feature
        components): fixed for the model, so worked out once, not at every station upload."""
        return ReferenceMoments.of(np.column_stack([self.reference_probabilities,
                                                    self.spaces[FEATURES].reference_projections]))

    def n_numbers(self) -> int:
        """How many numbers the reference adds to the metadata."""
        total = self.reference_probabilities.size
        for space in self.spaces.values():
            b = space.basis
            total += b.mean.size + b.components.size + b.variances.size + 2 + space.reference_projections.size
        if self.mean_shift is not None:
            m = self.mean_shift
            total += (m.outputs_null.statistics.size + m.layout_null.statistics.size + m.layout_reference.mean.size
                      + m.layout_reference.covariance.size + 1)
        return int(total)

    def to_dict(self) -> dict:
        return {
            "score": "squared Mahalanobis distance in the components + squared residual / residual_variance",
            **{name: space.to_dict() for name, space in self.spaces.items()},
            "reference_probabilities": rounded(self.reference_probabilities, FLOAT32_DIGITS),
            "calibration": self.calibration,
            **({"mean_shift": self.mean_shift.to_dict()} if self.mean_shift is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "metadata") -> "FeatureReference":
        where = f"{source}: feature_reference"
        if not isinstance(data, dict) or any(not isinstance(data.get(name), dict) for name in SPACES):
            raise MetadataError(f"{where} must hold {' and '.join(SPACES)}")
        spaces = {name: ReferenceSpace.from_dict(data[name], f"{where}.{name}") for name in SPACES}
        try:
            probabilities = finite_array(data["reference_probabilities"], 1, allow_empty=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise MetadataError(f"{where} is malformed: {exc}") from None
        lengths = {len(space.reference_projections) for space in spaces.values()} | {len(probabilities)}
        if len(lengths) != 1:
            raise MetadataError(f"{where} is inconsistent: reference samples of different sizes {sorted(lengths)}")
        mean_shift = (MeanShiftMonitor.from_dict(data["mean_shift"], f"{where}.mean_shift")
                      if data.get("mean_shift") is not None else None)
        if mean_shift is not None and mean_shift.layout_reference.mean.size != spaces[INPUT_LAYOUT].reference_projections.shape[1]:
            raise MetadataError(f"{where}.mean_shift is inconsistent: its layout reference has "
                                f"{mean_shift.layout_reference.mean.size} numbers for "
                                f"{spaces[INPUT_LAYOUT].reference_projections.shape[1]} monitored components")
        return cls(spaces, probabilities, dict(data.get("calibration") or {}), mean_shift)
