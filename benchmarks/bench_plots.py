"""Bench PNGs: latency against accuracy per model, and file size per model."""

from __future__ import annotations

from pathlib import Path

from edgecxr.train.plots import plt, save_png  # matplotlib, headless

FORMAT_COLORS = {"keras": "tab:red", "tflite": "tab:blue", "onnx": "tab:green"}


def plot_latency_vs_accuracy(rows: list[dict], path: Path) -> Path:
    """Batch-1 median latency (log scale) against test accuracy, one panel per thread count."""
    measured = [r for r in rows if r["batch_size"] == 1 and r["latency_ms_p50"] and r["accuracy"] is not None]
    threads = sorted({r["threads"] for r in measured}) or [1]
    figure, axes = plt.subplots(1, len(threads), figsize=(6.5 * len(threads), 4.5), squeeze=False)
    for axis, count in zip(axes[0], threads):
        for row in (r for r in measured if r["threads"] == count):
            axis.scatter(row["latency_ms_p50"], row["accuracy"], s=60, color=FORMAT_COLORS.get(row["format"], "grey"),
                         marker="s" if row["format"] == "keras" else "o", zorder=3)
            axis.annotate(row["name"], (row["latency_ms_p50"], row["accuracy"]), textcoords="offset points",
                          xytext=(5, 4), fontsize=7)
        axis.set_xscale("log")
        axis.set_xlabel("median latency per image at batch 1 (ms, log scale)")
        axis.set_ylabel("accuracy at the stored threshold")
        axis.set_title(f"latency vs accuracy, {count} thread{'s' * (count > 1)}")
        axis.grid(alpha=0.3, which="both")
    figure.tight_layout()
    return save_png(figure, path)


def plot_size_per_format(rows: list[dict], path: Path) -> Path:
    """File size of each model (MiB), one bar per file."""
    sizes = {}
    for row in rows:
        if row["size_mb"] is not None:
            sizes.setdefault(row["file"], (row["size_mb"], row["format"]))
    names = list(sizes)
    figure, axis = plt.subplots(figsize=(6.5, 0.45 * max(len(names), 2) + 1.2))
    bars = axis.barh(names, [sizes[n][0] for n in names], color=[FORMAT_COLORS.get(sizes[n][1], "grey") for n in names])
    axis.bar_label(bars, fmt="%.2f MB", fontsize=8, padding=3)
    axis.invert_yaxis()
    axis.set_xlabel("file size (MiB)")
    axis.set_title("model size per format")
    axis.margins(x=0.2)
    figure.tight_layout()
    return save_png(figure, path)
