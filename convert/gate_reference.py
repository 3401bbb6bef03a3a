"""The feature reference every artifact carries for the edge runtime's input gate and site monitor.

Made in two steps (edge_runtime/feature_reference.py says what it holds and how it scores):

1. Once per run: the principal components of the Keras model's features, and of the model inputs'
   layout, on training-split images.
2. Per artifact, in its own runtime (its int8 features differ a little from Keras'): the scores of
   validation images set the refusal thresholds, and their projections and probabilities become
   the site monitor's reference sample.

The validation split is halved by patient: one half calibrates (step 2), the other is never used
here, so `benchmarks/measure/site_safety.py` can measure refusals and false alarms on images the reference
has not seen. Test images are never involved.

The site monitor's film-layout test compares a site's layout components with every training-split
film's, against a null drawn by training patient (step 1, `run_layout_test`); its model-output
test's null is drawn by patient from the calibration half in step 2 (monitor_nulls.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.batching import predict_with_features_in_batches
from edgecxr.edge_runtime.feature_reference import (DEFAULT_COMPONENTS, FEATURES, INPUT_LAYOUT, LAYOUT_GRID,
                                                   MONITORED_COMPONENTS, REFUSAL_RATE, FeatureBasis,
                                                   FeatureReference, ReferenceSpace, conformal_threshold, fit_basis,
                                                   input_layout, min_calibration_images)
from edgecxr.edge_runtime.folders import LabelledImage
from edgecxr.edge_runtime.preprocessing import PreprocessSpec
from edgecxr.edge_runtime.run_folder import RunFolder
from edgecxr.train.dataset import split_by_patient

from .calibration import ImageSet, stratified_sample, to_image_set
from .keras_graph import FEATURE_OUTPUT, PROBABILITY_OUTPUT, feature_layer, serving_function
from .monitor_nulls import LayoutTest, calibrate_monitor, training_layout_test

# Training images the components are fitted on: enough for 16 components of 1280 features.
FIT_IMAGES = 1000
# The share of validation patients whose images calibrate the reference; the rest are held out.
CALIBRATION_SHARE = 0.5


@dataclass
class GateImages:
    """The images a run's feature references are made from, and how they were chosen."""

    fit: ImageSet | None  # training split: the components (dropped once fitted: 0.6 GB for Lite0)
    calibration: ImageSet  # half the validation split: the threshold and the monitor's sample
    description: dict
    # The monitor's layout test, from the training films (None: KS tests only).
    layout_test: LayoutTest | None = None


def validation_halves(run: RunFolder, seed: int) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """(calibration, held out): the run's validation images split by patient, stratified, seeded."""
    samples = run.split("validation")
    held_out, calibration = split_by_patient([s.path for s in samples], [s.label for s in samples],
                                             CALIBRATION_SHARE, seed)
    return [samples[i] for i in calibration], [samples[i] for i in held_out]


def paths_digest(paths) -> str:
    """A short fingerprint of a set of image paths, so a benchmark can check it holds the same split."""
    text = "\n".join(sorted(str(Path(p).resolve()) for p in paths))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def gate_images(run: RunFolder, seed: int) -> GateImages:
    spec = run.metadata.preprocessing
    fit_samples = stratified_sample(run.split("train"), FIT_IMAGES, seed)
    calibration, held_out = validation_halves(run, seed)
    fit = to_image_set(fit_samples, spec, f"{run.path}/split.json train", "decoding feature-reference images")
    calibrate = to_image_set(calibration, spec, f"{run.path}/split.json validation",
                             "decoding gate calibration images")
    description = {
        "basis_images": {"source": "split.json train", "n_images": len(fit.labels),
                         "choice": f"stratified by class, seed {seed}"},
        "calibration_images": {"source": "split.json validation", "n_images": len(calibrate.labels),
                               "choice": f"{CALIBRATION_SHARE:.0%} of the validation patients, stratified, seed {seed}",
                               "paths_sha256": paths_digest(calibrate.paths)},
        "held_out_validation_images": {"n_images": len(held_out), "paths_sha256": paths_digest(s.path for s in held_out),
                                       "use": "never used here: for measuring refusals and false alarms"},
        "seed": seed,
    }
    return GateImages(fit, calibrate, description)


def training_layouts(run: RunFolder) -> np.ndarray:
    """(n, 64): the layout grid of every training-split film. It depends on the preprocessing alone,
    not on the model's weights, so training films are a fair reference for a site's."""
    # One load of the whole split: the same list training decoded, so its pixel cache serves it.
    films = to_image_set(run.split("train"), run.metadata.preprocessing, f"{run.path}/split.json train",
                         "decoding training films for the site monitor's layout reference")
    return input_layout(films.inputs)


def run_layout_test(run: RunFolder, basis: FeatureBasis, seed: int) -> LayoutTest | None:
    """The site monitor's layout test: the training films' leading layout components, and their
    null drawn by training patient."""
    layouts = basis.project(training_layouts(run))[:, :MONITORED_COMPONENTS]
    return training_layout_test(layouts, [s.path for s in run.split("train")], seed)


def keras_features(keras_model, spec: PreprocessSpec, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, features) of the Keras model through the inference graph the converters start
    from: one trace for every batch size (Keras' own predict step would retrace per model and shape)."""
    serve, _ = serving_function(keras_model, spec)

    def predict(batch):
        outputs = serve(batch)
        return outputs[PROBABILITY_OUTPUT].numpy(), outputs[FEATURE_OUTPUT].numpy()

    return predict_with_features_in_batches(predict, inputs)


def run_bases(keras_model, spec: PreprocessSpec, inputs: np.ndarray,
              n_components: int = DEFAULT_COMPONENTS) -> dict[str, FeatureBasis] | None:
    """The principal components of both views on the training images `inputs`: the Keras model's
    features, and the inputs' layout. None for a model without a pooling layer to take features from."""
    if feature_layer(keras_model) is None:
        return None
    _, features = keras_features(keras_model, spec, inputs)
    return {FEATURES: fit_basis(features, n_components), INPUT_LAYOUT: fit_basis(input_layout(inputs), n_components)}


def artifact_reference(predict, bases: dict[str, FeatureBasis], images: GateImages,
                       refusal_rate: float = REFUSAL_RATE) -> FeatureReference:
    """The reference for one artifact: `predict` is its runtime's (probabilities, features) function."""
    inputs = images.calibration.inputs
    probabilities, features = predict_with_features_in_batches(predict, inputs)
    vectors = {FEATURES: features, INPUT_LAYOUT: input_layout(inputs)}
    # Each view refuses at most half the allowed share, so both together at most all of it.
    view_rate = refusal_rate / len(bases)
    spaces, refused = {}, np.zeros(len(inputs), dtype=bool)
    for name, basis in bases.items():
        scores = basis.score(vectors[name])
        threshold = conformal_threshold(scores, view_rate)
        if threshold is not None:
            refused |= scores > threshold
        spaces[name] = ReferenceSpace(basis, threshold, basis.project(vectors[name])[:, :MONITORED_COMPONENTS])
    monitor = None
    if images.layout_test is not None:
        outputs = np.column_stack([probabilities, spaces[FEATURES].reference_projections])
        monitor = calibrate_monitor(outputs, images.calibration.paths, images.layout_test,
                                    int(images.description.get("seed", 0)))
    feature_basis = bases[FEATURES]
    calibration = {
        **images.description,
        "features": f"global average pooling ({feature_basis.dim} values), the graph's second output",
        "input_layout": f"the model input averaged over an {LAYOUT_GRID}x{LAYOUT_GRID} grid",
        "explained_variance": {name: explained_share(basis) for name, basis in bases.items()},
        "refusal_rate": refusal_rate,
        "threshold_rule": (f"per view, split conformal at {view_rate:g}: the ceil((n + 1) * (1 - {view_rate:g}))-th "
                           f"smallest score of the n calibration images in this artifact's runtime (none below "
                           f"{min_calibration_images(view_rate)} images); refused if either view is above"),
        "n_calibration_images": len(inputs),
        "calibration_images_refused": int(refused.sum()),
        "monitor_reference": (f"the calibration images' probabilities and first {MONITORED_COMPONENTS} coordinates "
                              f"in each view, in this artifact's runtime"),
        "monitor_tests": ("mean shift, nulls drawn by patient (feature_reference.mean_shift)" if monitor is not None
                          else "Kolmogorov-Smirnov, Bonferroni (no training layout reference or too few patients "
                               "for a null drawn by patient)"),
        "made_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return FeatureReference(spaces, probabilities, calibration, monitor)


def explained_share(basis: FeatureBasis) -> float:
    """The share of the training vectors' variance inside the basis' components."""
    inside = float(np.sum(basis.variances))
    return round(inside / (inside + basis.residual_variance * (basis.dim - basis.n_components)), 4)
