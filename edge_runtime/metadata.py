"""The metadata file that travels next to every model: `<model file>.json`.

It records everything needed to run the model correctly (labels, preprocessing, threshold) and
the model file's sha256, so a model is never run with the wrong preprocessing or a swapped file.
A seal, the sha256 of the rest of the document (model hash included) in canonical JSON, covers
every field: an edited threshold, label, preprocessing step, gate reference or commissioning
record is refused like a changed model. It guards against careless hands, not a forger (anyone can
recompute it); a signed manifest would be the step for that. Metadata written before the seal
existed has none: it is read, and running its model says once that it is unsealed (re-export it).
Exported artifacts also carry the feature reference of the input gate and site monitor
(feature_reference.py); a model exported before them has none and still runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import json_safe, write_json_atomic
from .errors import MetadataError
from .feature_reference import FeatureReference
from .preprocessing import PreprocessSpec

SCHEMA = "edgecxr.model/1"
SEAL_KEY = "seal"
TRUST_HINT = "re-export the model (edgecxr convert or commission), or pass --trust to run it anyway"


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
    # Why the file or its metadata cannot be vouched for, when read with the checks off (--trust).
    unverified: list[str] = field(default_factory=list, compare=False, repr=False)
    # False for metadata written before edgecxr sealed it: read, with a warning where a model is run.
    sealed: bool = field(default=True, compare=False, repr=False)

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


def seal_of(document: dict) -> str:
    """sha256 of everything but the seal, as canonical JSON (sorted keys, no spaces)."""
    body = {key: value for key, value in document.items() if key != SEAL_KEY}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def write_metadata(model_path: str | Path, metadata: ModelMetadata) -> Path:
    """Stamp the metadata with the model file's name and sha256, seal it and write it next to the model."""
    model_path = Path(model_path)
    metadata.model_file = model_path.name
    metadata.sha256 = sha256_file(model_path)
    target = metadata_path(model_path)
    # Sealed as it will read back: through JSON, so numpy numbers and tuples are what the reader sees.
    document = json.loads(json.dumps(json_safe(metadata.to_dict()), allow_nan=False))
    document[SEAL_KEY] = seal_of(document)
    write_json_atomic(target, document, number_lists_on_one_line=True)
    return target


def integrity_problems(model_path: Path, document: dict) -> list[str]:
    """Why this model and metadata are not the pair `write_metadata` wrote (empty when they are)."""
    name = metadata_path(model_path).name
    found = []
    # No seal at all: written before edgecxr sealed its metadata (read, with a warning; see read_metadata).
    if document.get(SEAL_KEY) is not None and document[SEAL_KEY] != seal_of(document):
        found.append(f"{name} was edited after it was written (its seal does not match: threshold, labels, "
                     f"preprocessing or gate may not be the validated ones)")
    if sha256_file(model_path) != document.get("sha256"):
        found.append(f"{model_path.name} does not match the sha256 in {name} (file changed or swapped)")
    return found


def read_metadata(model_path: str | Path, verify_sha256: bool = True) -> ModelMetadata:
    """Load and validate the metadata of `model_path`; refuse a model whose bytes or metadata do not
    match what was written. With `verify_sha256` off (--trust) the reasons are kept in `unverified`."""
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
    problems = integrity_problems(model_path, data) if isinstance(data, dict) and data.get("schema") == SCHEMA else []
    if problems and verify_sha256:
        # Before the fields are interpreted: an edited field is reported as an edit, whatever it says.
        raise MetadataError(f"{'; '.join(problems)}; {TRUST_HINT}")
    metadata = ModelMetadata.from_dict(data, source=path.name)
    metadata.unverified = problems
    metadata.sealed = data.get(SEAL_KEY) is not None
    return metadata
