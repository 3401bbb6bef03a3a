"""The model card the station shows at a click and `doctor` prints: what the model is for, how well
it did and where, and which threshold rule is in force.

Everything comes from the model's sealed metadata (convert/card_facts.py writes the figures there,
`edgecxr commission` the site's record), never from files beside it: a model installed from a bundle
shows the same card as on the build machine, and an edited figure breaks the seal.
"""

from __future__ import annotations

from pathlib import Path

from .metadata import ModelMetadata
from .versions import package_version

INTENDED_USE = ("Triage support for pediatric chest X-rays (NORMAL vs PNEUMONIA): it orders the worklist "
                "and flags films for a clinician's attention. It is not a diagnosis; every film is read "
                "by a clinician.")
PERFORMANCE_KEY = "performance"  # convert/card_facts.KEY


def performance(metadata: ModelMetadata) -> dict:
    details = metadata.details if isinstance(metadata.details, dict) else {}
    found = details.get(PERFORMANCE_KEY)
    return found if isinstance(found, dict) else {}


def threshold_rule(metadata: ModelMetadata) -> str:
    record = metadata.commissioning
    if record and record.get("rule"):
        return f"site rule of {record.get('site')}: {record['rule']}"
    return performance(metadata).get("threshold_rule") or "not recorded (exported before edgecxr sealed its card)"


def model_card(model_path: Path, metadata: ModelMetadata, runtime: str, learned_check: str) -> dict:
    commissioning = metadata.commissioning
    commissioned = None
    if commissioning:
        commissioned = {key: commissioning.get(key) for key in ("site", "date", "threshold", "previous_threshold",
                                                                 "target_sensitivity", "rule")}
        commissioned["images"] = commissioning.get("images")
        commissioned["at_site_threshold"] = commissioning.get("at_site_threshold")
    facts = performance(metadata)
    return {
        "intended_use": INTENDED_USE,
        "model_file": Path(model_path).name,
        "sha256": metadata.sha256,
        "arch": metadata.arch,
        "format": metadata.format,
        "quantization": metadata.quantization,
        "runtime": runtime,
        "labels": list(metadata.labels),
        "positive_label": metadata.positive_label,
        "threshold": metadata.threshold,
        "threshold_rule": threshold_rule(metadata),
        "validated": facts.get("validated"),
        "other_sites": facts.get("other_sites") or [],
        "commissioned": commissioned,
        "input_gate": {"cheap_checks": "on", "learned_check": learned_check},
        "edgecxr_version": package_version("edgecxr"),
        "exported_at": metadata.details.get("exported_at") if isinstance(metadata.details, dict) else None,
    }


def interval_text(figure: dict | None) -> str:
    if not figure or figure.get("value") is None:
        return "-"
    low, high = figure["ci95"]
    return f"{figure['value']:.3f} [{low:.3f}, {high:.3f}] (n {figure['n']})"


def figures_text(figures: dict) -> str:
    return (f"sensitivity {interval_text(figures.get('sensitivity'))}, specificity "
            f"{interval_text(figures.get('specificity'))}, accuracy {interval_text(figures.get('accuracy'))}")


def commissioning_text(metadata: ModelMetadata) -> str:
    record = metadata.commissioning
    if not record:
        return "none"
    return f"site {record.get('site')}, {str(record.get('date', ''))[:10]}"
