"""The metadata file that travels next to every model: `<model file>.json`.

It records everything needed to run the model correctly (labels, preprocessing, threshold) and
the model file's sha256, so a model is never run with the wrong preprocessing or a swapped file.
Exported artifacts also carry the feature reference of the input gate and site monitor
(feature_reference.py); a model exported before them has none and still runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import write_json_atomic
from .errors import MetadataError
from .feature_reference import FeatureReference
from .preprocessing import PreprocessSpec

SCHEMA = "edgecxr.model/1"


def metadata_path(model_path: str | Path) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ModelMetadata:
    labels: list[str]
    positive_label: str
    threshold: float
    preprocessing: PreprocessSpec
    format: str  # keras | tflite | onnx
    quantization: str  # none | fp16 | dynamic | int8
    arch: str
    model_file: str = ""
    sha256: str = ""
    # Format-specific facts (tensor dtypes, int8 scale/zero-point, source model hash, versions,
    # training summary): informative, never needed to run the model.
    details: dict = field(default_factory=dict)
    # What the model's features look like on X-rays: the learned input check and the site monitor.
    feature_reference: FeatureReference | None = None

    @property
    def commissioning(self) -> dict | None:
        """The record `edgecxr commission` left: which site's labelled films set this threshold."""
        return self.details.get("commissioning") if isinstance(self.details, dict) else None

    def to_dict(self) -> dict:
        data = {
            "schema": SCHEMA,
            "model_file": self.model_file,
            "sha256": self.sha256,
            "format": self.format,
            "quantization": self.quantization,
            "arch": self.arch,
            "labels": list(self.labels),
            "positive_label": self.positive_label,
            "threshold": float(self.threshold),
            "preprocessing": self.preprocessing.to_dict(),
            "details": self.details,
        }
        if self.feature_reference is not None:
            data["feature_reference"] = self.feature_reference.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict, source: str = "metadata") -> "ModelMetadata":
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise MetadataError(f"{source}: not an edgecxr model metadata file (schema {SCHEMA!r} expected)")
        required = ["labels", "positive_label", "threshold", "preprocessing", "format", "quantization", "arch"]
        missing = [key for key in required if key not in data]
        if missing:
            raise MetadataError(f"{source}: missing field(s) {', '.join(missing)}")
        labels = data["labels"]
        if not isinstance(labels, list) or len(labels) != 2 or data["positive_label"] not in labels:
            raise MetadataError(f"{source}: labels must be two names including positive_label")
        threshold = data["threshold"]
        if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise MetadataError(f"{source}: threshold must be a number in [0, 1]")
        return cls(
            labels=list(labels),
            positive_label=data["positive_label"],
            threshold=float(threshold),
            preprocessing=PreprocessSpec.from_dict(data["preprocessing"]),
            format=data["format"],
            quantization=data["quantization"],
            arch=data["arch"],
            model_file=data.get("model_file", ""),
            sha256=data.get("sha256", ""),
            details=data.get("details", {}),
            feature_reference=(FeatureReference.from_dict(data["feature_reference"], source)
                               if data.get("feature_reference") is not None else None),
        )


def write_metadata(model_path: str | Path, metadata: ModelMetadata) -> Path:
    """Stamp the metadata with the model file's name and sha256 and write it next to the model."""
    model_path = Path(model_path)
    metadata.model_file = model_path.name
    metadata.sha256 = sha256_file(model_path)
    target = metadata_path(model_path)
    write_json_atomic(target, metadata.to_dict(), number_lists_on_one_line=True)
    return target


def read_metadata(model_path: str | Path, verify_sha256: bool = True) -> ModelMetadata:
    """Load and validate the metadata of `model_path`; refuse a model whose bytes do not match."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise MetadataError(f"model file not found: {model_path}")
    path = metadata_path(model_path)
    if not path.is_file():
        raise MetadataError(f"no metadata for {model_path.name}: expected {path.name} next to it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataError(f"{path.name} is not valid JSON: {exc}") from None
    metadata = ModelMetadata.from_dict(data, source=path.name)
    if verify_sha256:
        actual = sha256_file(model_path)
        if actual != metadata.sha256:
            raise MetadataError(
                f"{model_path.name} does not match the sha256 in {path.name} (file changed or "
                f"swapped); re-export it, or pass --trust to run it anyway"
            )
    return metadata
