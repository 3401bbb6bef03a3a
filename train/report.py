"""Metrics as a rich table for the terminal."""

from __future__ import annotations

from rich.table import Table


def metrics_table(metrics: dict, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("accuracy", "precision", "sensitivity", "specificity", "f1", "roc_auc", "threshold", "n_images"):
        value = metrics[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    table.add_row("confusion \\[\\[tn, fp], \\[fn, tp]]", f"\\[\\[{tn}, {fp}], \\[{fn}, {tp}]]")
    return table
