"""Turn worker results into bench rows: clinical metrics, fidelity to Keras, speed, memory.

One row per (model, way of calling it, threads, batch size). The Keras reference has two ways:
`predict` (Keras' own batch loop, what most users call) and `call` (model(x), the direct call).
Accuracy and fidelity do not depend on threads or batch size; they repeat on each of a model's rows.
"""

from __future__ import annotations

import numpy as np

from edgecxr.convert.fidelity import compare
from edgecxr.edge_runtime.metrics import binary_metrics

from .artifacts import STATUS_ICONS, Candidate
from .runner import WorkerRun

MB = 1024 * 1024
WIDE_SPREAD = 2.0  # p95 above this many medians: the machine was busy, or the runtime jittery
KERAS_MODE_NAMES = {"predict": "predict", "call": "direct call"}

METRIC_FIELDS = ("accuracy", "precision", "sensitivity", "specificity", "f1", "roc_auc", "threshold",
                 "n_images", "confusion_matrix")
FIDELITY_FIELDS = ("agreement", "disagreements", "max_abs_diff", "mean_abs_diff")
LATENCY_FIELDS = ("latency_ms_p50", "latency_ms_p95", "latency_ms_mean", "latency_ms_min", "latency_ms_max",
                  "latency_ms_per_image", "throughput_ips", "repeats")


def row_name(candidate: Candidate, mode: str) -> str:
    if candidate.format == "keras":
        return f"{candidate.name} ({KERAS_MODE_NAMES.get(mode, mode)})"
    return candidate.name


def empty_row(candidate: Candidate, mode: str, threads: int | None, batch_size: int | None) -> dict:
    """A row with every field present: failed rows keep the same schema, with nulls."""
    size = candidate.path.stat().st_size if candidate.path.is_file() else None
    row = {
        "name": row_name(candidate, mode),
        "file": candidate.name,
        "format": candidate.format,
        "quantization": candidate.quantization,
        "mode": mode,
        "status": candidate.status,
        "status_icon": STATUS_ICONS[candidate.status],
        "reason": candidate.reason,
        "device": None,
        "runtime": None,
        "threads": threads,
        "batch_size": batch_size,
        "size_mb": size / MB if size is not None else None,
        "parameters": None,
    }
    row.update({key: None for key in (*METRIC_FIELDS, *FIDELITY_FIELDS, *LATENCY_FIELDS)})
    row.update(spread_wide=None, preprocess_ms_p50=None, cold_start_s=None, load_s=None,
               peak_rss_mb=None, peak_rss_mb_end=None, speedup_vs_keras_predict=None,
               cold_start_speedup_vs_keras=None, memory_reduction_vs_keras=None)
    return row


def failed_rows(candidate: Candidate, threads: int | None = None, reason: str | None = None) -> list[dict]:
    row = empty_row(candidate, "predict" if candidate.format == "keras" else "invoke", threads, None)
    row.update(status="failed", status_icon=STATUS_ICONS["failed"], reason=reason or candidate.reason)
    return [row]


def aligned(run: WorkerRun, reference: WorkerRun) -> tuple[np.ndarray, np.ndarray]:
    """Both models' probabilities on the images both could read."""
    mine = dict(zip(run.result["kept"], run.probabilities))
    theirs = dict(zip(reference.result["kept"], reference.probabilities))
    common = sorted(set(mine) & set(theirs))
    return np.array([mine[i] for i in common]), np.array([theirs[i] for i in common])


def quality(run: WorkerRun, labels: np.ndarray, reference: WorkerRun | None) -> dict:
    """Clinical metrics at the model's stored threshold, and its agreement with the Keras model."""
    threshold = run.candidate.metadata.threshold
    kept = np.asarray(run.result["kept"], dtype=np.int64)
    metrics = binary_metrics(labels[kept], run.probabilities, threshold)
    found = {key: metrics[key] for key in METRIC_FIELDS}
    if reference is not None:
        mine, theirs = aligned(run, reference)
        fidelity = compare(theirs, mine, None, threshold)
        found.update({key: fidelity[key] for key in FIDELITY_FIELDS})
    return found


def worker_rows(run: WorkerRun, labels: np.ndarray, reference: WorkerRun | None, parameters: int | None) -> list[dict]:
    candidate, result = run.candidate, run.result
    if not run.ok:
        stage = result.get("stage", "run")
        return failed_rows(candidate, run.threads, f"{stage}: {result.get('error', 'failed')}")
    shared = quality(run, labels, reference)
    shared.update(
        device=result.get("device"),
        runtime=result.get("runtime"),
        runtime_versions=result.get("runtime_versions"),
        parameters=result.get("parameters") or (candidate.metadata.details.get("parameters") if candidate.metadata
                                                else None) or parameters,
        preprocess_ms_p50=result.get("preprocess_ms_p50"),
        cold_start_s=run.cold_start_s,
        load_s=result.get("load_s"),
        peak_rss_mb=result.get("peak_rss_mb_first_prediction"),
        peak_rss_mb_end=result.get("peak_rss_mb_end"),
        skipped=len(result.get("skipped", [])),
    )
    rows = []
    for mode, timings in result["latency"].items():
        for timing in timings:
            row = empty_row(candidate, mode, run.threads, timing["batch_size"])
            row.update(shared)
            row.update({key: timing[key] for key in LATENCY_FIELDS})
            row["spread_wide"] = bool(timing["latency_ms_p95"] > WIDE_SPREAD * timing["latency_ms_p50"])
            rows.append(row)
    return rows


def add_comparisons(rows: list[dict]) -> None:
    """How much faster, quicker to start and lighter each row is than Keras `predict` (same threads, batch)."""
    keras = {(r["threads"], r["batch_size"]): r for r in rows
             if r["format"] == "keras" and r["mode"] == "predict" and r["latency_ms_p50"]}
    for row in rows:
        reference = keras.get((row["threads"], row["batch_size"]))
        if reference is None or not row["latency_ms_p50"]:
            continue
        row["speedup_vs_keras_predict"] = reference["latency_ms_p50"] / row["latency_ms_p50"]
        if reference["cold_start_s"] and row["cold_start_s"]:
            row["cold_start_speedup_vs_keras"] = reference["cold_start_s"] / row["cold_start_s"]
        if reference["peak_rss_mb"] and row["peak_rss_mb"]:
            row["memory_reduction_vs_keras"] = reference["peak_rss_mb"] / row["peak_rss_mb"]


def build_rows(runs: list[WorkerRun], skipped_candidates: list[Candidate], labels: np.ndarray) -> list[dict]:
    """Every row, in the order the models were benchmarked; candidates that never ran come last."""
    references = {r.threads: r for r in runs if r.candidate.format == "keras" and r.ok}
    parameters = next((r.result.get("parameters") for r in references.values()), None)
    rows = []
    for run in runs:
        reference = references.get(run.threads) or next(iter(references.values()), None)
        rows.extend(worker_rows(run, labels, reference, parameters))
    for candidate in skipped_candidates:
        rows.extend(failed_rows(candidate))
    add_comparisons(rows)
    return rows
