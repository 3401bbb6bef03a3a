"""`edgecxr commission --renormalise RUN`: the run's Keras model with BatchNorm statistics re-estimated
on the site's images, re-exported and re-verified exactly as `edgecxr convert` exports the given model.

The site's images (the ones the given model's input gate accepted; their labels are never read
here) re-estimate the statistics (train/batchnorm_reestimation.py). The artifact is then built by convert's
own exporter in the given model's format and quantization, with the same bias correction and the
same tolerance against the Keras model (now the re-estimated one), and its input gate calibrated as
convert does.

int8 calibration and verification both use the site's images (a seeded split, chosen without
labels: half at most for verification, the rest for calibration, none in both), not the run's:
after re-estimation the network is normalised for the site, so the activation ranges (and the
per-layer bias correction's means) it will meet are the site's, and the site's films are where it
must agree with the Keras model (the compact CNN's rebuilds agreed on 99.4-100 %).

Runs transfer-trained from pretrained weights are refused (pretrained_statistics): their frozen
BatchNorm statistics are ImageNet's, not their training images'.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.batching import predict_in_batches
from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.folders import LabelledImage
from edgecxr.edge_runtime.formats import EXPORT_FORMATS, ExportFormat
from edgecxr.edge_runtime.metadata import ModelMetadata, read_metadata
from edgecxr.edge_runtime.run_folder import RunFolder
from edgecxr.train.keras_backend import KerasBackend, compiled_predict
from edgecxr.train.batchnorm_reestimation import NoBatchNorm, renormalise

from .calibration import DEFAULT_CALIBRATION_SIZE, DEFAULT_VERIFY_SIZE, UNLABELLED, ImageSet, to_image_set
from .exporter import ConvertOptions, ExportContext, export_one, gate_inputs

SEED = 42
MIN_IMAGES = 10  # fewer says nothing about a population's statistics (and leaves nothing to verify on)


def source_sha256(metadata: ModelMetadata) -> str | None:
    """The sha256 of the model.keras an artifact came from (also through an earlier re-estimation)."""
    record = metadata.commissioning or {}
    earlier = record.get("renormalisation") if isinstance(record, dict) else None
    if isinstance(earlier, dict) and earlier.get("run_model_sha256"):
        return earlier["run_model_sha256"]
    return metadata.details.get("source_sha256")


def matching_run(run_dir: Path, model: Path, metadata: ModelMetadata) -> RunFolder:
    run = RunFolder.open(run_dir)
    expected = source_sha256(metadata)
    if expected != run.metadata.sha256:
        raise EdgecxrError(f"--renormalise {run_dir}: {model.name} was not exported from this run's model.keras "
                           f"(sha256 {str(expected)[:12]}..., the run's {run.metadata.sha256[:12]}...)")
    return run


def pretrained_statistics(run_metadata: ModelMetadata) -> str | None:
    """Why the run's BatchNorm statistics are not its training images' (None: they are).

    Transfer training from pretrained weights keeps the backbone's BatchNorm frozen (train/
    transfer_training.py): its statistics are the pretrained data's (ImageNet), and every layer
    above was fitted to activations normalised by them. Re-estimating them on X-rays, the site's or
    the training ones, changes that normalisation instead of removing a site shift: EfficientNet-Lite0
    re-estimated on half of test/ fell from 0.886 to 0.711 accuracy on the other half in Keras
    (research/bn_reestimation_probe.py)."""
    transfer = run_metadata.details.get("transfer")
    weights = transfer.get("weights") if isinstance(transfer, dict) else None
    if weights is None or str(weights).lower() == "none":
        return None
    return f"its BatchNorm statistics are the pretrained {weights} weights' (frozen in transfer training)"


def format_row(metadata: ModelMetadata, model: Path) -> ExportFormat:
    row = next((f for f in EXPORT_FORMATS if f.format == metadata.format and f.quantization == metadata.quantization),
               None)
    if row is None:
        raise EdgecxrError(f"{model.name} is {metadata.format} {metadata.quantization}, which convert does not build")
    return row


def site_images(paths: list[Path], spec, calibration_size: int, verify_size: int,
                seed: int) -> tuple[ImageSet, ImageSet, ImageSet]:
    """All the site's accepted images (for the statistics), and two disjoint label-free seeded parts
    of them: verification (at most half) and calibration. Their labels are not passed in: UNLABELLED."""
    samples = [LabelledImage(Path(p), UNLABELLED) for p in paths]
    everything = to_image_set(samples, spec, "site images", "decoding the site's images")
    order = np.random.default_rng(seed).permutation(len(everything.paths))
    n_verify = min(verify_size, len(order) // 2)
    parts = []
    for chosen, use in ((order[:n_verify], "verification"), (order[n_verify:][:calibration_size], "calibration")):
        chosen = np.sort(chosen)
        parts.append(ImageSet(everything.inputs[chosen], everything.labels[chosen],
                              [everything.paths[i] for i in chosen],
                              f"site images ({use}: seeded, of {len(samples)} accepted)"))
    return everything, parts[0], parts[1]


def rebuild_renormalised(run_dir: Path, model: Path, images: list[Path], workdir: Path,
                         calibration_size: int = DEFAULT_CALIBRATION_SIZE,
                         verify_size: int = DEFAULT_VERIFY_SIZE, seed: int = SEED) -> tuple[Path, dict]:
    """Build the re-estimated artifact in `workdir`; returns its path and the renormalisation record.
    Raises EdgecxrError (one line) for a run that does not match, a model without BatchNorm, or an
    artifact that fails verification."""
    model = Path(model)
    metadata = read_metadata(model)
    run = matching_run(run_dir, model, metadata)
    frozen = pretrained_statistics(run.metadata)
    if frozen:
        raise EdgecxrError(f"--renormalise {run_dir}: {frozen}, not its training images'; re-estimating them "
                           f"on the site would change what the model was fitted to (commission without it)")
    if len(images) < MIN_IMAGES:
        raise EdgecxrError(f"--renormalise needs at least {MIN_IMAGES} accepted site images, not {len(images)}")
    row = format_row(metadata, model)
    keras_model = KerasBackend(run.model_path).model
    everything, verification, calibration = site_images(images, run.metadata.preprocessing, calibration_size,
                                                        verify_size, seed)
    try:
        stats = renormalise(keras_model, everything.inputs, seed=seed)
    except NoBatchNorm as exc:
        raise EdgecxrError(f"--renormalise: {exc}; nothing to re-estimate (commission without it)") from None
    del everything
    correction = metadata.details.get("bias_correction")
    options = ConvertOptions(run=run.path, quantize=row.quantization, format=row.format,
                             calibration_size=calibration_size, verify_size=verify_size, seed=seed, out=Path(workdir),
                             # the given model's own bias correction (convert's default when it had none)
                             bias_correction=correction.get("mode", "layers") if isinstance(correction, dict)
                             else "layers")
    bases, gate, skipped = gate_inputs(run, keras_model, seed)
    reference = predict_in_batches(compiled_predict(keras_model), verification.inputs)
    ctx = ExportContext(run, options, keras_model, Path(workdir), calibration if row.quantization == "int8" else None,
                        verification, reference, gate_bases=bases, gate_images=gate, gate_skipped=skipped)
    result = export_one(row, ctx)
    if result.status != "ok":
        raise EdgecxrError(f"--renormalise: the re-estimated model {result.error}")
    record = {"run": str(run.path.resolve()), "run_model_sha256": run.metadata.sha256, "images": len(images),
              **{k: v for k, v in stats.to_dict().items() if k != "images"},
              "calibration": calibration.describe() if row.quantization == "int8" else None,
              "verification": {"agreement": result.verification.get("agreement"),
                               "tolerance": result.verification.get("tolerance"),
                               "images": verification.describe()},
              "bias_correction": result.bias_correction}
    return Path(result.path), record
