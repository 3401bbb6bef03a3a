"""`edgecxr convert` orchestration: one uniform ExportResult per artifact, each verified before it lands.

Every artifact is built in a temporary file next to its final name, verified there in its real
runtime, given its feature reference (the input gate and site monitor, gate_reference.py) there,
and only then renamed into place with its metadata: a failed conversion or a failed verification
leaves no partial file and keeps the earlier good artifact of that name.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.atomic import atomic_path, write_json_atomic
from edgecxr.edge_runtime.backends import BACKENDS
from edgecxr.edge_runtime.batching import predict_in_batches
from edgecxr.edge_runtime.console import console, progress_bar
from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.feature_reference import FEATURES, INPUT_LAYOUT, FeatureBasis
from edgecxr.edge_runtime.images import open_image
from edgecxr.edge_runtime.metadata import ModelMetadata, read_metadata, write_metadata
from edgecxr.edge_runtime.preprocessing import frame_input
from edgecxr.edge_runtime.formats import EXPORT_FORMATS, ExportFormat
from edgecxr.edge_runtime.run_folder import EXPORT_DIR, SPLIT_FILE, VERIFY_FILE, RunFolder
from edgecxr.edge_runtime.versions import package_versions
from edgecxr.train.keras_backend import KerasBackend, compiled_predict

from . import card_facts, onnx_export
from .builders import builder_of
from .class_activation import describe_head
from .bias_correction import MODES, convolution_input_means, layer_corrected_copy, logit_gap, logit_shifted_copy
from .calibration import (DEFAULT_CALIBRATION_SIZE, DEFAULT_VERIFY_SIZE, ImageSet, calibration_folder,
                          calibration_set, verification_set)
from .fidelity import compare
from .gate_reference import GateImages, artifact_reference, gate_images, run_bases, run_layout_test
from .keras_graph import export_saved_model, serving_function
from .plan import plan_artifacts
from .verify import problems



@dataclass
class ConvertOptions:
    run: Path
    quantize: str = "int8"
    format: str = "all"
    calibration_data: Path | None = None
    calibration_size: int = DEFAULT_CALIBRATION_SIZE
    verify: bool = True
    verify_size: int = DEFAULT_VERIFY_SIZE
    opset: int = onnx_export.DEFAULT_OPSET
    seed: int = 42
    out: Path | None = None
    bias_correction: str = "layers"  # off | logit | layers (bias_correction.py)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out is not None else Path(self.run) / EXPORT_DIR


@dataclass
class ExportResult:
    name: str
    format: str
    quantization: str
    path: str
    status: str  # ok | unverified | failed
    seconds: float
    error: str | None = None
    size_bytes: int | None = None
    runtime: str | None = None
    verification: dict | None = None
    bias_correction: dict | None = None
    input_gate: dict | None = None  # the feature reference: threshold and calibration, or why there is none

    def to_dict(self) -> dict:
        return asdict(self)


class VerificationFailed(Exception):
    pass


@dataclass
class ExportContext:
    """What every artifact needs: the run, the traced graph, calibration and verification data.

    `keras_model` is what gets converted; `reference_probs` always come from the run's own model,
    also in a context made by `with_model` for a bias-corrected copy.
    """

    run: RunFolder
    options: ConvertOptions
    keras_model: object
    workdir: Path
    calibration: ImageSet | None
    verification: ImageSet | None
    reference_probs: np.ndarray | None
    # The run's bases (features, input layout) and the images to calibrate each artifact's reference
    # on; None (with the reason in `gate_skipped`) when the model has no pooling layer or the run no
    # split.json.
    gate_bases: dict[str, FeatureBasis] | None = None
    gate_images: GateImages | None = None
    gate_skipped: str | None = None
    _saved_model: Path | None = field(default=None)
    _intermediates: dict = field(default_factory=dict)
    _calibration_reference: np.ndarray | None = field(default=None)
    _input_means: dict | None = field(default=None)
    _frames: dict = field(default_factory=dict)
    # (format, quantization) -> (path, converter facts) of each artifact published in this run
    published: dict = field(default_factory=dict)

    def saved_model(self) -> Path:
        """The SavedModel the TFLite converter starts from, exported once (export traps checked)."""
        if self._saved_model is None:
            folder = self.workdir / "saved_model"
            export_saved_model(self.keras_model, self.run.metadata.preprocessing, folder)
            self._saved_model = folder
        return self._saved_model

    def serving_function(self):
        """(tf.function, input signature): the inference graph with its preprocessing, for converters
        that trace it themselves."""
        return serving_function(self.keras_model, self.run.metadata.preprocessing)

    def intermediate(self, name: str, make) -> Path:
        """A file a builder makes once per context and reuses (ONNX's float model for its int8 file):
        `make(path)` writes it in the work folder the first time it is asked for."""
        if name not in self._intermediates:
            path = self.workdir / name
            make(path)
            self._intermediates[name] = path
        return self._intermediates[name]

    def calibration_reference(self) -> np.ndarray:
        """The Keras model's probabilities on the calibration images, computed once."""
        if self._calibration_reference is None:
            self._calibration_reference = predict_in_batches(compiled_predict(self.keras_model), self.calibration.inputs)
        return self._calibration_reference

    def convolution_input_means(self) -> dict:
        """The run's model's mean convolution inputs on the calibration images, computed once."""
        if self._input_means is None:
            self._input_means = convolution_input_means(self.keras_model, self.calibration.inputs)
        return self._input_means

    def plan_inputs(self, plan: ExportFormat, images: ImageSet) -> np.ndarray:
        """What the artifact of `plan` is fed for `images`: their preprocessed inputs, or for a graph that
        takes frames, each film decoded by the edge runtime's decoder into a frame (made once per set)."""
        if plan.takes != "frame":
            return images.inputs
        size = frame_size_of(self.run.metadata.preprocessing)
        key = (id(images), size)
        if key not in self._frames:
            self._frames[key] = np.stack([frame_input(open_image(path), *size) for path in images.paths])
        return self._frames[key]

    def with_model(self, model, name: str) -> "ExportContext":
        """The same run, data and reference, converting `model` instead (in its own work folder)."""
        workdir = self.workdir / name
        workdir.mkdir()
        return replace(self, keras_model=model, workdir=workdir, _saved_model=None, _intermediates={})


def frame_size_of(spec) -> tuple[int, int]:
    from .mobile_export import frame_size

    return frame_size(spec)


def build_file(plan: ExportFormat, target: Path, ctx: ExportContext) -> dict:
    """Write the artifact to `target` with its format's registered builder; returns converter facts."""
    return builder_of(plan).build(plan, target, ctx)


def artifact_metadata(plan: ExportFormat, path: Path, ctx: ExportContext, facts: dict) -> ModelMetadata:
    source = ctx.run.metadata
    io = builder_of(plan).tensor_facts(path)
    details = {
        "source_model": str(ctx.run.model_path),
        "source_sha256": source.sha256,
        **io,
        **{k: v for k, v in facts.items() if v is not None},
        "parameters": source.details.get("parameters"),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
    }
    if plan.quantization == "int8":
        details["calibration"] = {**ctx.calibration.describe(), "seed": ctx.options.seed}
    details[card_facts.KEY] = card_facts.performance(ctx.run)
    if "feature_map" in io:
        head = describe_head(ctx.keras_model)
        if head is not None:  # the heat map of the same inference (edge_runtime/heatmap.py)
            details["class_activation"] = head
    return ModelMetadata(
        labels=list(source.labels), positive_label=source.positive_label, threshold=source.threshold,
        preprocessing=source.preprocessing, format=plan.format, quantization=plan.quantization,
        arch=source.arch, details=details,
    )


def artifact_probabilities(path: Path, metadata: ModelMetadata, inputs: np.ndarray) -> tuple[np.ndarray, str]:
    """The artifact's probabilities on `inputs` in its real runtime, and that runtime's name."""
    try:
        backend = BACKENDS[metadata.format](path, metadata=metadata)
    except EdgecxrError as exc:  # the runtime cannot even load it
        raise VerificationFailed(str(exc)) from None
    return predict_in_batches(backend.predict_proba, inputs), backend.runtime


def build_bias_corrected(plan: ExportFormat, target: Path, ctx: ExportContext) -> dict:
    """An int8 artifact corrected as `ctx.options.bias_correction` says (logit, or layers then logit)."""
    start, described = ctx, {"mode": ctx.options.bias_correction}
    if ctx.options.bias_correction == "layers":
        means = ctx.convolution_input_means()
        model = layer_corrected_copy(ctx.keras_model, means, builder_of(plan).weight_steps)
        start = ctx.with_model(model, f"layers-{plan.filename}")
        described["corrected_convolutions"] = len(means)
    facts = build_file(plan, target, start)
    probs, _ = artifact_probabilities(target, artifact_metadata(plan, target, ctx, facts),
                                      ctx.plan_inputs(plan, ctx.calibration))
    gap = logit_gap(ctx.calibration_reference(), probs)
    if gap.mean is not None:
        corrected = ctx.with_model(logit_shifted_copy(start.keras_model, -gap.mean), f"corrected-{plan.filename}")
        facts = build_file(plan, target, corrected)
    return {**facts, "bias_correction": {**described, **gap.describe()}}


def published_twin(plan: ExportFormat, ctx: ExportContext) -> tuple[Path, dict] | None:
    """The artifact `plan`'s file re-encodes, of the same quantization and the same source model:
    published in this run, or already in the export folder with sealed metadata."""
    builder = builder_of(plan)
    if builder.twin is None:
        return None
    if (builder.twin, plan.quantization) in ctx.published:
        return ctx.published[(builder.twin, plan.quantization)]
    row = next((f for f in EXPORT_FORMATS if f.format == builder.twin and f.quantization == plan.quantization), None)
    path = ctx.options.out_dir / row.filename if row is not None else None
    if path is None or not path.is_file():
        return None
    try:
        details = read_metadata(path).details
    except EdgecxrError:  # unsealed, edited or foreign: build from the Keras model instead
        return None
    if details.get("source_sha256") != ctx.run.metadata.sha256:
        return None
    return path, {k: details.get(k) for k in ("converter", "quantizer", "bias_correction") if details.get(k)}


def build_artifact(plan: ExportFormat, target: Path, ctx: ExportContext) -> dict:
    twin = published_twin(plan, ctx)
    if twin is not None:
        builder = builder_of(plan)
        return builder.from_twin(*twin, target)
    if plan.quantization == "int8" and ctx.options.bias_correction != "off":
        return build_bias_corrected(plan, target, ctx)
    return build_file(plan, target, ctx)


def verify_file(plan: ExportFormat, path: Path, metadata: ModelMetadata, ctx: ExportContext) -> tuple[dict, str]:
    """Run the artifact in its real runtime on the verification images; raise if out of tolerance."""
    probs, runtime = artifact_probabilities(path, metadata, ctx.plan_inputs(plan, ctx.verification))
    comparison = compare(ctx.reference_probs, probs, ctx.verification.known_labels(), metadata.threshold,
                         band=plan.tolerance.threshold_band)
    comparison["tolerance"] = plan.tolerance.describe()
    found = problems(comparison, plan.quantization)
    if found:
        raise VerificationFailed("; ".join(found))
    return comparison, runtime


def attach_feature_reference(plan: ExportFormat, path: Path, metadata: ModelMetadata, ctx: ExportContext) -> dict:
    """Give the artifact at `path` its feature reference, made in its own runtime; returns what the
    verify report says about it."""
    skipped = ("its graph takes a frame and returns the scores alone: the app runs the gate (docs/mobile.md)"
               if plan.takes == "frame" else ctx.gate_skipped)
    if ctx.gate_bases is None or plan.takes == "frame":
        metadata.details["input_gate"] = {"learned_check": f"none: {skipped}"}
        return metadata.details["input_gate"]
    backend = BACKENDS[metadata.format](path, metadata=metadata)
    expected = ctx.gate_bases[FEATURES].dim
    if backend.feature_dim != expected:
        raise VerificationFailed(f"its feature output has {backend.feature_dim} values, the Keras model's {expected}")
    reference = artifact_reference(backend.predict, ctx.gate_bases, ctx.gate_images)
    metadata.feature_reference = reference
    calibration = reference.calibration
    return {"refusal_thresholds": {name: space.refusal_threshold for name, space in reference.spaces.items()},
            "feature_dim": expected, "n_calibration_images": calibration["n_calibration_images"],
            "calibration_images_refused": calibration["calibration_images_refused"],
            "metadata_numbers": reference.n_numbers()}


def export_one(plan: ExportFormat, ctx: ExportContext, build=build_artifact) -> ExportResult:
    """Build (with `build`), verify and publish one artifact; never raises for a bad artifact."""
    target = ctx.options.out_dir / plan.filename
    started = time.perf_counter()
    result = ExportResult(plan.filename, plan.format, plan.quantization, str(target), "failed", 0.0)
    try:
        with atomic_path(target) as tmp:
            facts = build(plan, tmp, ctx)
            result.bias_correction = facts.get("bias_correction")
            metadata = artifact_metadata(plan, tmp, ctx, facts)
            if ctx.verification is not None:
                result.verification, result.runtime = verify_file(plan, tmp, metadata, ctx)
                metadata.details["verification"] = result.verification
            result.input_gate = attach_feature_reference(plan, tmp, metadata, ctx)
            result.size_bytes = tmp.stat().st_size
        write_metadata(target, metadata)
        ctx.published[(plan.format, plan.quantization)] = (target, facts)
        result.status = "ok" if ctx.verification is not None else "unverified"
    except VerificationFailed as exc:
        result.error = f"{plan.filename} failed verification: {exc}"
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # converters raise many types; report the first line, keep going
        message = str(exc).strip().splitlines()
        result.error = f"{plan.filename}: conversion failed: {type(exc).__name__}: {message[0] if message else ''}"
    result.seconds = round(time.perf_counter() - started, 2)
    return result


def failure_message(failed: list[ExportResult]) -> str:
    """One line naming every failed artifact and why, for the CLI's error."""
    kept = "it" if len(failed) == 1 else "them"
    return (" | ".join(r.error for r in failed)
            + f" (nothing was written for {kept}; an earlier file of the same name is kept; "
              f"--no-verify publishes unverified files)")


def write_verify_report(ctx: ExportContext, results: list[ExportResult]) -> Path:
    """verify.json: the latest verification of every artifact in the folder, plus this run's failures."""
    path = ctx.options.out_dir / VERIFY_FILE
    artifacts = {}
    if path.is_file():
        try:
            artifacts = json.loads(path.read_text(encoding="utf-8")).get("artifacts", {})
        except (OSError, ValueError, AttributeError):
            artifacts = {}
    for result in results:
        if result.status != "failed":
            artifacts[result.name] = result.to_dict()
    report = {
        "run": str(ctx.run.path),
        "source_model": str(ctx.run.model_path),
        "source_sha256": ctx.run.metadata.sha256,
        "threshold": ctx.run.metadata.threshold,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tolerances": {f.quantization: f.tolerance.describe() for f in EXPORT_FORMATS},
        "verification_images": ctx.verification.describe() if ctx.verification is not None else None,
        "calibration_images": ctx.calibration.describe() if ctx.calibration is not None else None,
        "artifacts": {name: artifacts[name] for name in sorted(artifacts)},
        "failures": [r.to_dict() for r in results if r.status == "failed"],
    }
    write_json_atomic(path, report)
    return path


def gate_inputs(run: RunFolder, keras_model, seed: int) -> tuple[dict | None, GateImages | None, str | None]:
    """(bases, calibration images, None), or (None, None, why) when no feature reference can be made."""
    if not (run.path / SPLIT_FILE).is_file():
        return None, None, f"the run has no {SPLIT_FILE} to take training and validation images from"
    images = gate_images(run, seed)
    with console.status("fitting the feature reference"):
        try:
            bases = run_bases(keras_model, run.metadata.preprocessing, images.fit.inputs)
        except ValueError as exc:  # an untrained or collapsed model: its features say nothing
            return None, None, f"no feature reference can be fitted on the training images ({exc})"
    if bases is None:
        return None, None, "the model has no global-average-pooling layer to take features from"
    images = replace(images, fit=None)
    return bases, replace(images, layout_test=run_layout_test(run, bases[INPUT_LAYOUT], seed)), None


def convert_run(options: ConvertOptions, build=build_artifact) -> list[ExportResult]:
    """Build, verify and publish every planned artifact; failures are returned, not raised."""
    plans = plan_artifacts(options.quantize, options.format)
    run = RunFolder.open(options.run)
    if options.bias_correction not in MODES:
        raise EdgecxrError(f"--bias-correction must be one of {', '.join(MODES)}, not {options.bias_correction!r}")
    if options.calibration_size < 1 or options.verify_size < 1:
        raise EdgecxrError("--calibration-size and --verify-size must be at least 1")
    if options.calibration_data is not None:
        calibration_folder(options.calibration_data)  # refuse test/ before any slow work
    options.out_dir.mkdir(parents=True, exist_ok=True)  # an unusable --out is found before TensorFlow loads
    reference = KerasBackend(run.model_path)
    # The feature reference first: its 1,000 fitting images are dropped once fitted, before the
    # calibration and verification images are decoded (all at once took Lite0's convert past 4 GB).
    bases, images, skipped = gate_inputs(run, reference.model, options.seed)
    verification = verification_set(run, options.verify_size, options.seed) if options.verify else None
    calibration = None
    if any(p.quantization == "int8" for p in plans):
        calibration = calibration_set(run, options.calibration_size, options.seed, options.calibration_data,
                                      exclude=verification.paths if verification is not None else ())
    reference_probs = predict_in_batches(reference.predict_proba, verification.inputs) if verification is not None else None
    with tempfile.TemporaryDirectory(prefix="edgecxr-convert-") as workdir:
        ctx = ExportContext(run, options, reference.model, Path(workdir), calibration, verification, reference_probs,
                            gate_bases=bases, gate_images=images, gate_skipped=skipped)
        with console.status("tracing the inference graph"):
            ctx.saved_model()
        results = []
        with progress_bar(transient=True) as progress:
            task = progress.add_task("converting", total=len(plans))
            for plan in plans:
                progress.update(task, description=f"converting {plan.filename}")
                results.append(export_one(plan, ctx, build))
                progress.advance(task)
    write_verify_report(ctx, results)
    return results
