"""What the model card says of a model's performance, sealed into each artifact's metadata.

convert copies them from the run folder while it has it: the validated figures (the run's patient
split, with exact 95 % intervals), the rule that picked the threshold, and what `edgecxr evaluate`
measured on labelled folders of other sites for this very model (matched by sha256). The card
(edge_runtime/model_card.py) reads nothing else, so a model installed from a bundle, far from its
run folder, shows the same card as the build machine; `edgecxr commission` adds the site's own rule.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgecxr.edge_runtime.intervals import confusion_figures
from edgecxr.edge_runtime.run_folder import EVALUATIONS_FILE, METRICS_FILE, RunFolder

KEY = "performance"  # in ModelMetadata.details


def _read(path) -> dict | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def validated(run: RunFolder) -> dict | None:
    metrics = _read(run.path / METRICS_FILE) or {}
    validation = metrics.get("validation")
    if not isinstance(validation, dict) or "confusion_matrix" not in validation:
        return None
    return {**confusion_figures(validation["confusion_matrix"], validation.get("threshold", run.metadata.threshold)),
            "roc_auc": validation.get("roc_auc"),
            "source": metrics.get("validation_source", "validation split")}


def site_name(data) -> str | None:
    """The folder's last two parts (chest_xray/test): which site, without the build machine's paths."""
    if not data:
        return None
    parts = Path(str(data)).parts
    return "/".join(parts[-2:])


def other_sites(run: RunFolder) -> list[dict]:
    """`edgecxr evaluate`'s results for this run's model on other labelled folders, newest first."""
    entries = (_read(run.path / EVALUATIONS_FILE) or {}).values()
    found = [entry for entry in entries if isinstance(entry, dict) and entry.get("model_sha256") == run.metadata.sha256
             and "confusion_matrix" in entry]
    found.sort(key=lambda entry: str(entry.get("date", "")), reverse=True)
    return [{**confusion_figures(entry["confusion_matrix"], entry.get("threshold", run.metadata.threshold)),
             "roc_auc": entry.get("roc_auc"), "data": site_name(entry.get("data")), "date": entry.get("date"),
             "scored": "the Keras model this artifact was converted from (edgecxr evaluate), at its validated "
                       "threshold"} for entry in found]


def performance(run: RunFolder) -> dict:
    rule = run.metadata.details.get("threshold_rule") if isinstance(run.metadata.details, dict) else None
    return {"threshold_rule": f"{rule or 'set at training'} (picked on validation only)",
            "validated": validated(run), "other_sites": other_sites(run)}
