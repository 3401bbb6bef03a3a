"""`edgecxr commission`: check a model on a clinic's own labelled films and give it a site threshold.

The clinic's images are scored once, exactly as `predict` scores them (input gate included: refused
films are counted and left out, unreadable ones skipped with the reason). The local accuracy,
sensitivity and specificity with exact 95 % intervals are reported at the model's threshold and at
the site threshold (site_threshold.py). The result is a NEW model: a byte copy of the original
with its own metadata holding the site threshold and the commissioning record; the original model
and its metadata are only read.

With a re-estimation of the BatchNorm statistics (`--renormalise RUN`), the new model is instead
the run's Keras model re-estimated on the site's accepted images and re-exported; building it
needs TensorFlow, so the edge runtime only calls a `rebuild` function it is handed (the CLI hands
convert/site_reexport.py's) and stays TensorFlow-free.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from .atomic import atomic_path
from .errors import EdgecxrError
from .folders import labelled_images
from .gate import NOT_CXR_TEXT
from .intervals import clopper_pearson
from .metadata import metadata_path, read_metadata, sha256_file, write_metadata
from .metrics import confusion_matrix
from .predictor import Predictor
from .site_threshold import CONFIDENCE, SiteThreshold, choose_site_threshold

SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SITE_TAG = re.compile(r"\.site-[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

# (run folder, model, accepted site images, work folder) -> (re-estimated artifact, its record)
Rebuild = Callable[[Path, Path, list, Path], tuple[Path, dict]]


@dataclass
class SiteScores:
    """The site's films as the model sees them: probabilities of the scored ones and what was left out."""

    labels: tuple[str, ...]
    truths: list[bool] = field(default_factory=list)  # True: PNEUMONIA
    probabilities: list[float] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    scored: Counter = field(default_factory=Counter)
    refused: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def check_site_name(site: str) -> str:
    if not SITE_NAME.match(site):
        raise EdgecxrError(f"site name {site!r} must be 1-64 letters, digits, '-' or '_' (it goes into a file name)")
    return site


def default_output(model: Path, site: str) -> Path:
    """model_int8.tflite -> model_int8.site-NAME.tflite, beside the original. A model commissioned
    before keeps its base name: model_int8.site-A.tflite -> model_int8.site-B.tflite, not .site-A.site-B."""
    return model.with_name(f"{SITE_TAG.sub('', model.stem)}.site-{site}{model.suffix}")


def check_output(model: Path, out: Path) -> None:
    if out.suffix.lower() != model.suffix.lower():
        raise EdgecxrError(f"--out {out} must end in {model.suffix} like the model it copies")
    if out.resolve() == model.resolve():
        raise EdgecxrError(f"--out {out} is the model itself: commissioning never changes the original "
                           f"(give another --out)")
    if out.is_dir():
        raise EdgecxrError(f"--out {out} is a folder; give the new model's file name")


def score_site(predictor: Predictor, folder: Path, batch_size: int = 8) -> SiteScores:
    labels = tuple(predictor.metadata.labels)
    images = labelled_images(folder, labels)
    scores = SiteScores(labels)
    predictions = predictor.predict_many((image.path for image in images), batch_size=batch_size)
    for image, prediction in zip(images, predictions):
        label = labels[image.label]
        if not prediction.ok:
            scores.skipped.append({"path": prediction.path, "class": label, "reason": prediction.error})
        elif prediction.refused:
            scores.refused.append({"path": prediction.path, "class": label, "reason": prediction.reason})
        else:
            scores.scored[label] += 1
            scores.truths.append(label == predictor.positive_label)
            scores.probabilities.append(prediction.probability)
            scores.paths.append(str(image.path))
    empty = [label for label in labels if not scores.scored[label]]
    if empty:
        raise EdgecxrError(f"no usable {'/'.join(empty)} image in {folder} after {len(scores.refused)} refused "
                           f"and {len(scores.skipped)} skipped: commissioning needs films of both classes")
    return scores


def proportion(successes: int, n: int) -> dict:
    low, high = clopper_pearson(successes, n, CONFIDENCE) if n else (None, None)
    return {"value": successes / n if n else None, "ci95": [low, high], "successes": successes, "n": n}


def local_figures(truths, probabilities, threshold: float) -> dict:
    """Accuracy, sensitivity and specificity at `threshold` with exact two-sided 95 % intervals."""
    truths = np.asarray(truths, dtype=bool)
    (tn, fp), (fn, tp) = confusion_matrix(truths, np.asarray(probabilities) >= threshold)
    return {
        "threshold": float(threshold),
        "accuracy": proportion(tn + tp, tn + fp + fn + tp),
        "sensitivity": proportion(tp, tp + fn),
        "specificity": proportion(tn, tn + fp),
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }


def commissioning_record(site: str, model: Path, scores: SiteScores, previous: float, target: float,
                         choice: SiteThreshold) -> dict:
    return {
        "site": site,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_model": model.name,
        "source_sha256": sha256_file(model),
        "images": {label: scores.scored[label] for label in scores.labels},
        "refused": dict(Counter(item["class"] for item in scores.refused)),
        "skipped": len(scores.skipped),
        "target_sensitivity": target,
        "previous_threshold": float(previous),
        "threshold": choice.threshold,
        "rule": choice.rule,
        "evidence": choice.to_dict(),
        "at_previous_threshold": local_figures(scores.truths, scores.probabilities, previous),
        "at_site_threshold": local_figures(scores.truths, scores.probabilities, choice.threshold),
    }


def write_commissioned(model: Path, out: Path, record: dict) -> Path:
    """Copy the bytes of `model` (the original, or its re-estimated rebuild) to `out` and write its
    metadata with the site threshold; each file atomic."""
    metadata = read_metadata(model)
    metadata.threshold = record["threshold"]
    metadata.details = {**metadata.details, "commissioning": record}
    with atomic_path(out) as tmp:
        shutil.copyfile(model, tmp)
    write_metadata(out, metadata)
    return metadata_path(out)


@dataclass
class Commissioned:
    record: dict
    scores: SiteScores
    out: Path

    def to_dict(self) -> dict:
        """What --json writes: the record, and every film left out with the reason."""
        return {"model": str(self.out), "commissioning": self.record, "refused": self.scores.refused,
                "skipped": self.scores.skipped}


def commission_site(model: Path, folder: Path, site: str, target: float, out: Path,
                    renormalise: Path | None = None, rebuild: Rebuild | None = None) -> Commissioned:
    """Score the site, (optionally) rebuild the model with re-estimated statistics and score again,
    choose the site threshold and write the new model. Nothing is written before all of it worked."""
    predictor = Predictor.open(model)
    scores = score_site(predictor, folder)
    previous = predictor.threshold
    if renormalise is None:
        choice = choose_site_threshold(scores.truths, scores.probabilities, previous, target)
        record = {**commissioning_record(site, model, scores, previous, target, choice), "renormalised": False}
        write_commissioned(model, out, record)
        return Commissioned(record, scores, out)
    if rebuild is None:
        raise EdgecxrError("--renormalise is not available here (it needs the edgecxr command line)")
    # The work folder sits beside --out: the finished model is then only copied on the same disk.
    with tempfile.TemporaryDirectory(prefix=".edgecxr-renormalise-", dir=out.parent) as workdir:
        artifact, renormalisation = rebuild(Path(renormalise), model, scores.paths, Path(workdir))
        before = local_figures(scores.truths, scores.probabilities, previous)
        scores = score_site(Predictor.open(artifact), folder)
        choice = choose_site_threshold(scores.truths, scores.probabilities, previous, target)
        record = {**commissioning_record(site, model, scores, previous, target, choice), "renormalised": True,
                  "renormalisation": renormalisation, "before_renormalisation_at_previous_threshold": before}
        write_commissioned(artifact, out, record)
    return Commissioned(record, scores, out)


def print_report(console, record: dict, scores: SiteScores, out: Path) -> None:
    from rich.markup import escape

    def figures(name: str) -> str:
        part = record[name]
        cells = []
        for key in ("accuracy", "sensitivity", "specificity"):
            item = part[key]
            low, high = item["ci95"]
            cells.append(f"{key} {item['value']:.3f} [{low:.3f}, {high:.3f}]")
        return f"threshold {part['threshold']:.4f}: " + ", ".join(cells)

    images = ", ".join(f"{label} {count}" for label, count in record["images"].items())
    console.print(f"[bold]commissioning[/bold] site {escape(record['site'])}: {images} scored, "
                  f"{len(scores.refused)} {NOT_CXR_TEXT} (left out), {len(scores.skipped)} skipped",
                  highlight=False)
    renormalisation = record.get("renormalisation")
    if renormalisation:
        console.print(f"BatchNorm statistics re-estimated on {renormalisation['images']} of the site's images "
                      f"({renormalisation['layers']} layers); the model was re-exported and verified",
                      highlight=False, soft_wrap=True)
        console.print(f"before     {figures('before_renormalisation_at_previous_threshold')}", highlight=False)
    console.print(f"validated  {figures('at_previous_threshold')}", highlight=False)
    console.print(f"site       {figures('at_site_threshold')}", highlight=False)
    console.print("[dim](95% Clopper-Pearson intervals)[/dim]", highlight=False)
    evidence = record["evidence"]
    # A lowered threshold is news the site must see: the validated one was missing its pneumonia.
    style = {"lowered": "yellow", "raised": "green"}.get(evidence.get("decision"), "cyan")
    console.print(f"[{style}]{escape(record['rule'])}[/{style}]; sensitivity lower bound at the site threshold "
                  f"{evidence['sensitivity_lower_bound']:.3f}", highlight=False, soft_wrap=True)
    for item in scores.refused:
        console.print(f"[magenta]{NOT_CXR_TEXT}[/magenta] {escape(item['path'])}: {escape(item['reason'])}",
                      highlight=False, soft_wrap=True)
    for item in scores.skipped:
        console.print(f"[yellow]skipped[/yellow] {escape(item['path'])}: {escape(item['reason'])}",
                      highlight=False, soft_wrap=True)
    console.print(f"commissioned model written to {escape(str(out))} (original unchanged)", highlight=False,
                  soft_wrap=True)
