"""Where predictions go: a table for people, JSON lines or CSV for machines, and a run summary
(counts, refusals by the input gate, skipped files, metrics against folder labels, site monitor)."""

from __future__ import annotations

import csv
import json
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .atomic import atomic_path, json_safe
from .feature_reference import FeatureReference
from .gate import NOT_CXR_TEXT
from .metrics import binary_metrics
from .predictor import Prediction
from .site_monitor import SHIFT, TOO_FEW, UNAVAILABLE, compare_with_reference
from .text_cells import safe_cell

CSV_FIELDS = ("path", "label", "probability", "threshold", "latency_ms", "error", "reason", "gate_distance",
              "warnings", "truth")


def record(prediction: Prediction, truth: str | None) -> dict:
    """The machine-readable form of one result (JSON line or CSV row)."""
    row = prediction.to_dict()
    if truth is not None:
        row["truth"] = truth
    return row


class JsonLinesWriter:
    """One JSON object per line, flushed as soon as it is known, so a pipe sees results live."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def write(self, prediction: Prediction, truth: str | None) -> None:
        self.stream.write(json.dumps(record(prediction, truth)) + "\n")
        self.stream.flush()

    def close(self, success: bool = True) -> None:
        pass


class CsvWriter:
    """Rows stream into a temporary file that replaces `path` only when the run completes."""

    def __init__(self, path: Path):
        self._context = atomic_path(path)
        self._tmp = self._context.__enter__()
        self._handle = self._tmp.open("w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        self._writer.writeheader()

    def write(self, prediction: Prediction, truth: str | None) -> None:
        row = record(prediction, truth)
        row["warnings"] = "; ".join(row["warnings"])
        self._writer.writerow({key: safe_cell(row.get(key)) for key in CSV_FIELDS})

    def close(self, success: bool = True) -> None:
        self._handle.close()
        if success:
            self._context.__exit__(None, None, None)
        else:
            # Leaves an earlier good CSV in place and removes the partial one.
            self._context.__exit__(RuntimeError, RuntimeError("interrupted"), None)


class TableWriter:
    """Collects rows and prints one rich table (on stdout) at the end."""

    def __init__(self, title: str):
        self.title = title
        self.rows: list[tuple[Prediction, str | None]] = []

    def write(self, prediction: Prediction, truth: str | None) -> None:
        self.rows.append((prediction, truth))

    def close(self, success: bool = True) -> None:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        with_truth = any(truth is not None for _, truth in self.rows)
        table = Table(title=self.title, title_justify="left")
        table.add_column("image", overflow="fold")
        table.add_column("label")
        table.add_column("P(pneumonia)", justify="right")
        table.add_column("ms", justify="right")
        if with_truth:
            table.add_column("truth")
        for prediction, truth in self.rows:
            if prediction.refused:
                cells = [escape(prediction.path), f"[magenta]{NOT_CXR_TEXT}: {escape(prediction.reason)}[/magenta]",
                         "", f"{prediction.latency_ms:.1f}"]
            elif prediction.ok:
                cells = [escape(prediction.path), prediction.label, f"{prediction.probability:.4f}",
                         f"{prediction.latency_ms:.1f}"]
            else:
                cells = [escape(prediction.path), f"[yellow]skipped: {escape(prediction.error)}[/yellow]", "", ""]
            if prediction.warnings:
                cells[1] += "".join(f"\n[yellow]warning: {escape(w)}[/yellow]" for w in prediction.warnings)
            if with_truth:
                cells.append(truth or "")
            table.add_row(*cells)
        Console(highlight=False).print(table)


@dataclass
class Summary:
    """Counts per label, what the input gate refused and what was skipped (and why), latency,
    metrics against known labels, and the site monitor over every predicted image."""

    model: str
    runtime: str
    threshold: float
    positive_label: str
    labels: tuple[str, ...]
    reference: FeatureReference | None = None
    learned_check: str = "unavailable"
    # The model's commissioning record (edgecxr commission), None for a model as exported.
    commissioning: dict | None = None
    counts: Counter = field(default_factory=Counter)
    refused: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    truths: list[bool] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    # Every predicted image's probability and feature projection, for the site monitor.
    site_probabilities: list[float] = field(default_factory=list)
    site_projections: list[tuple] = field(default_factory=list)

    def add(self, prediction: Prediction, truth: str | None) -> None:
        if not prediction.ok:
            self.skipped.append({"path": prediction.path, "reason": prediction.error})
            return
        if prediction.refused:
            self.refused.append({"path": prediction.path, "reason": prediction.reason})
            return
        self.counts[prediction.label] += 1
        self.latencies_ms.append(prediction.latency_ms)
        if prediction.projection is not None:
            self.site_probabilities.append(prediction.probability)
            self.site_projections.append(prediction.projection)
        if truth is not None:
            self.truths.append(truth == self.positive_label)
            self.probabilities.append(prediction.probability)

    @property
    def n_predicted(self) -> int:
        return sum(self.counts.values())

    def site_monitor(self) -> dict:
        """The site monitor's verdict on the images predicted in this run (refused ones left out)."""
        result = compare_with_reference(self.reference, self.site_projections, self.site_probabilities)
        result.n_images = self.n_predicted
        return result.to_dict()

    def to_dict(self) -> dict:
        result = {
            "model": self.model,
            "runtime": self.runtime,
            "threshold": self.threshold,
            "n_images": self.n_predicted + len(self.refused) + len(self.skipped),
            "n_predicted": self.n_predicted,
            "n_refused": len(self.refused),
            "n_skipped": len(self.skipped),
            "counts": {label: self.counts.get(label, 0) for label in self.labels},
            "latency_ms": None,
            "input_gate": {"cheap_checks": "on", "learned_check": self.learned_check},
            "refused": self.refused,
            "skipped": self.skipped,
            "site_monitor": self.site_monitor(),
            "commissioning": commissioning_summary(self.commissioning),
        }
        if self.latencies_ms:
            result["latency_ms"] = {
                "median": round(statistics.median(self.latencies_ms), 3),
                "mean": round(statistics.fmean(self.latencies_ms), 3),
                "max": round(max(self.latencies_ms), 3),
            }
        if self.truths:
            metrics = binary_metrics(self.truths, self.probabilities, self.threshold)
            result["metrics"] = json_safe(metrics)
        return result

    def print(self, console) -> None:
        from rich.markup import escape

        data = self.to_dict()
        counts = ", ".join(f"{label} {count}" for label, count in data["counts"].items())
        line = (f"{data['n_predicted']} predicted ({counts}), {data['n_refused']} {NOT_CXR_TEXT}, "
                f"{data['n_skipped']} skipped")
        if data["latency_ms"]:
            line += f"; median latency {data['latency_ms']['median']:.1f} ms"
        console.print(f"[bold]summary[/bold] {line} [dim]({self.runtime}, threshold {self.threshold:.4f})[/dim]",
                      highlight=False)
        commissioned = data["commissioning"]
        if commissioned is not None:
            console.print(f"commissioned for site {escape(commissioned['site'])} on {commissioned['date'][:10]}: "
                          f"site threshold {commissioned['threshold']:.4f} (validated "
                          f"{commissioned['previous_threshold']:.4f})", highlight=False)
        else:
            console.print("[dim]not commissioned: the validated threshold (edgecxr commission sets a site's)[/dim]",
                          highlight=False)
        if "metrics" in data:
            m = data["metrics"]
            (tn, fp), (fn, tp) = m["confusion_matrix"]
            unscored = f"; {data['n_refused']} refused images not scored" if data["n_refused"] else ""
            console.print(
                f"against the folder labels ({m['n_images']} images{unscored}): accuracy {_fmt(m['accuracy'])}, "
                f"sensitivity {_fmt(m['sensitivity'])}, specificity {_fmt(m['specificity'])} "
                f"[dim](tn {tn}, fp {fp}, fn {fn}, tp {tp})[/dim]", highlight=False)
        if self.learned_check != "on":
            console.print(f"[dim]input gate: cheap checks only; learned check {escape(self.learned_check)}[/dim]",
                          highlight=False)
        monitor = data["site_monitor"]
        if monitor["verdict"] == SHIFT:
            console.print(f"[bold red]site monitor[/bold red] {escape(monitor['message'])} [dim]({monitor['strongest']}: "
                          f"statistic {monitor['statistic']:.3g}, Bonferroni p {monitor['p_value']:.2g}, "
                          f"{monitor['n_images']} images)[/dim]", highlight=False)
        elif monitor["verdict"] in (TOO_FEW, UNAVAILABLE):
            console.print(f"[dim]site monitor: {escape(monitor['message'])}[/dim]", highlight=False)
        else:
            console.print(f"site monitor: {escape(monitor['message'])} [dim](smallest Bonferroni p "
                          f"{monitor['p_value']:.2g})[/dim]", highlight=False)
        for item in data["refused"]:
            console.print(f"[magenta]{NOT_CXR_TEXT}[/magenta] {escape(item['path'])}: {escape(item['reason'])}",
                          highlight=False, soft_wrap=True)
        for item in data["skipped"]:
            console.print(f"[yellow]skipped[/yellow] {escape(item['path'])}: {escape(item['reason'])}",
                          highlight=False, soft_wrap=True)


def commissioning_summary(record: dict | None) -> dict | None:
    """What a prediction's reader needs from the commissioning record: which site set which threshold."""
    if record is None:
        return None
    keys = ("site", "date", "threshold", "previous_threshold", "target_sensitivity", "source_sha256")
    return {key: record.get(key) for key in keys}


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
