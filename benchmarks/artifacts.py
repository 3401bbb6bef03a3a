"""What to benchmark in a run folder: the Keras reference and every artifact in RUN/export/.

An artifact that the last `edgecxr convert` failed to build, or whose metadata does not match its
file, still gets a candidate: the bench shows it as a row with its status and the reason instead
of aborting (✅ ran and verified, ❎ ran but unverified, ❌ could not be exported, loaded or run).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.formats import EDGE_SUFFIXES, QUANT_TAGS, format_of_file
from edgecxr.edge_runtime.metadata import ModelMetadata, read_metadata
from edgecxr.edge_runtime.run_folder import EXPORT_DIR, MODEL_FILE, VERIFY_FILE, require_run_folder

STATUS_ICONS = {"ok": "✅", "unverified": "❎", "failed": "❌"}


@dataclass
class Candidate:
    """One model file to benchmark (or that should have been there)."""

    name: str  # file name, unique within the run: model.keras, model_int8.tflite, ...
    path: Path
    format: str  # keras | tflite | onnx
    quantization: str  # none | fp16 | dynamic | int8 (as in the metadata)
    status: str = "ok"  # ok | unverified | failed
    reason: str = ""
    metadata: ModelMetadata | None = None  # threshold and parameters for the parent's metrics

    @property
    def runnable(self) -> bool:
        return self.status != "failed"

    @property
    def tag(self) -> str:
        """keras-fp32, tflite-int8, onnx-fp32, ...: what --formats matches besides the format alone."""
        return f"{self.format}-{QUANT_TAGS.get(self.quantization, self.quantization)}"


def guess_from_name(path: Path) -> tuple[str, str]:
    """(format, quantization) from a name like model_int8.tflite, for files without usable metadata."""
    row = format_of_file(path)
    return (row.format, row.quantization) if row else (path.suffix.lstrip("."), "unknown")


def read_verify_report(export_dir: Path) -> dict:
    path = export_dir / VERIFY_FILE
    if not path.is_file():
        return {}
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def reference_candidate(run: Path) -> Candidate:
    path = run / MODEL_FILE
    candidate = Candidate(MODEL_FILE, path, "keras", "none")
    try:
        candidate.metadata = read_metadata(path)
    except EdgecxrError as exc:
        candidate.status, candidate.reason = "failed", str(exc)
    return candidate


def edge_candidate(path: Path, verified: dict, latest_failure: dict | None) -> Candidate:
    format, quantization = guess_from_name(path)
    candidate = Candidate(path.name, path, format, quantization)
    try:
        metadata = read_metadata(path)
    except EdgecxrError as exc:
        candidate.status, candidate.reason = "failed", str(exc)
        return candidate
    candidate.format, candidate.quantization = metadata.format, metadata.quantization
    candidate.metadata = metadata
    record = verified.get(path.name)
    if latest_failure is not None:
        candidate.status = "unverified"
        candidate.reason = f"the latest convert failed ({latest_failure.get('error')}); this is an earlier file"
    elif record is None:
        candidate.status, candidate.reason = "unverified", f"not listed in {VERIFY_FILE}"
    elif record.get("status") != "ok":
        candidate.status, candidate.reason = "unverified", f"convert status {record.get('status')!r}"
    return candidate


def discover(run: Path) -> list[Candidate]:
    """The Keras reference first, then every artifact of RUN/export/ and every failed export."""
    run = require_run_folder(run)
    candidates = [reference_candidate(run)]
    export_dir = run / EXPORT_DIR
    report = read_verify_report(export_dir)
    verified = report.get("artifacts") or {}
    failures = {f.get("name"): f for f in report.get("failures") or [] if isinstance(f, dict)}
    files = sorted(p for p in export_dir.glob("*") if p.suffix in EDGE_SUFFIXES and not p.name.startswith("."))
    for path in files:
        candidates.append(edge_candidate(path, verified, failures.get(path.name)))
    present = {p.name for p in files}
    for name, failure in sorted(failures.items()):
        if name and name not in present:
            candidates.append(Candidate(name, export_dir / name, failure.get("format", "?"),
                                        failure.get("quantization", "?"), "failed",
                                        failure.get("error") or "export failed"))
    return candidates


def select(candidates: list[Candidate], formats: list[str] | None) -> list[Candidate]:
    """Keep the candidates --formats names (format, format-quantization or file name); the Keras
    reference always stays: fidelity is measured against it."""
    if not formats:
        return candidates
    wanted = {f.strip().lower() for f in formats if f.strip()}
    known = {c.format for c in candidates} | {c.tag for c in candidates} | {c.name.lower() for c in candidates}
    unknown = sorted(wanted - known)
    if unknown:
        raise EdgecxrError(f"--formats {', '.join(unknown)}: not in this run; available: "
                           f"{', '.join(sorted({c.format for c in candidates} | {c.tag for c in candidates}))}")
    return [c for c in candidates
            if c.format == "keras" or c.format in wanted or c.tag in wanted or c.name.lower() in wanted]
