"""Whether an exported artifact meets its tolerance (from the format table), and the table that shows it."""

from __future__ import annotations

from rich import box
from rich.table import Table

from edgecxr.edge_runtime.formats import tolerance_of


def problems(comparison: dict, quantization: str) -> list[str]:
    """Why an artifact fails its tolerance (empty when it passes)."""
    tolerance = tolerance_of(quantization)
    found = []
    agreement = comparison.get("agreement_away", comparison["agreement"])
    if tolerance.min_agreement is not None and agreement < tolerance.min_agreement:
        counted = comparison["n_images"] - comparison.get("near_threshold", 0)
        found.append(f"agrees with the Keras model on {agreement:.1%} of {counted} images "
                     f"away from the threshold (needs {tolerance.min_agreement:.0%})")
    if tolerance.max_abs_diff is not None and not comparison["max_abs_diff"] <= tolerance.max_abs_diff:
        found.append(f"differs from the Keras model by up to {comparison['max_abs_diff']:.3g} in probability "
                     f"(allowed {tolerance.max_abs_diff:g})")
    if found and comparison["artifact_positive_rate"] in (0.0, 1.0) and 0 < comparison["reference_positive_rate"] < 1:
        found.append("it predicts one class for every image: typical of calibration data that does not look like "
                     "the model's real inputs, or of inputs normalised twice")
    return found


def verification_table(rows: list[dict], title: str = "verification against the Keras model") -> Table:
    """One row per artifact: its file, agreement, probability differences, accuracies, verdict."""
    runtimes = sorted({row["runtime"] for row in rows if row.get("runtime")})
    caption = "dp: |probability difference|; acc, keras: accuracy of the file and of the Keras model at the stored threshold"
    if runtimes:
        caption += f"; run on {', '.join(runtimes)}"
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, padding=(0, 1),
                  pad_edge=False, collapse_padding=True)
    for column in ("artifact", "size", "agree", "max dp", "mean dp", "acc", "keras", "status"):
        table.add_column(column, justify="left" if column in ("artifact", "status") else "right", no_wrap=True)
    for row in rows:
        check = row.get("verification") or {}
        status = row["status"]
        style = {"ok": "green", "unverified": "yellow"}.get(status, "red")
        table.add_row(
            row["name"], _size(row.get("size_bytes")), _pct(check.get("agreement")),
            _num(check.get("max_abs_diff")), _num(check.get("mean_abs_diff")),
            _pct(check.get("artifact_accuracy")), _pct(check.get("reference_accuracy")),
            f"[{style}]{status}[/{style}]",
        )
    return table


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value) -> str:
    return "-" if value is None else f"{value:.1e}"


def _size(value) -> str:
    return "-" if not value else f"{value / 1024:.0f}K"
