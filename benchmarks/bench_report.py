"""The bench results as people read them: rich tables, Markdown tables and a one-line verdict.

Two tables: quality (one row per model: size, clinical metrics, fidelity to Keras) and speed (one
row per model, way of calling, threads and batch size: latency, throughput, cold start, memory).
"""

from __future__ import annotations

from rich.table import Table

from edgecxr.edge_runtime.formats import QUANT_TAGS
from .machine import describe

# (header, row key, format), in the order the tables show them
QUALITY_COLUMNS = (
    ("", "status_icon", "s"), ("model", "file", "s"), ("format", "format", "s"), ("quant", "quantization", "q"),
    ("MB", "size_mb", ".2f"), ("params", "parameters", ","),
    ("acc", "accuracy", ".3f"), ("sens", "sensitivity", ".3f"), ("spec", "specificity", ".3f"), ("F1", "f1", ".3f"),
    ("AUC", "roc_auc", ".3f"),
    ("agree", "agreement", ".1%"), ("max Δp", "max_abs_diff", ".1e"), ("mean Δp", "mean_abs_diff", ".1e"),
)
SPEED_COLUMNS = (
    ("", "status_icon", "s"), ("model", "name", "s"), ("thr", "threads", "d"), ("batch", "batch_size", "d"),
    ("p50 ms", "latency_ms_p50", ".2f"), ("p95 ms", "latency_ms_p95", ".2f"), ("img/s", "throughput_ips", ".1f"),
    ("×Keras", "speedup_vs_keras_predict", ".1f"), ("prep ms", "preprocess_ms_p50", ".2f"),
    ("cold s", "cold_start_s", ".2f"), ("RSS MB", "peak_rss_mb", ".0f"),
)


def cell(row: dict, key: str, spec: str) -> str:
    value = row.get(key)
    if value is None:
        return "—"
    if spec == "s":
        return str(value)
    if spec == "q":
        return QUANT_TAGS.get(value, str(value))
    if spec == "d":
        return str(int(value))
    text = format(value, spec)
    if key == "latency_ms_p95" and row.get("spread_wide"):
        text += " ⚠"
    return text


def quality_rows(rows: list[dict]) -> list[dict]:
    """The first row of each model file: quality does not depend on threads, batch or call mode."""
    seen, found = set(), []
    for row in rows:
        if row["file"] not in seen:
            seen.add(row["file"])
            found.append(row)
    return found


def speed_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["latency_ms_p50"] is not None]


def summary(result: dict) -> dict:
    """int8 TFLite against Keras predict at batch 1, per thread count: the issue's core question."""
    rows = [r for r in result["rows"] if r["status"] != "failed" and r["batch_size"] == 1]
    found = []
    for keras in (r for r in rows if r["format"] == "keras" and r["mode"] == "predict"):
        edge = next((r for r in rows if r["format"] == "tflite" and r["quantization"] == "int8"
                     and r["threads"] == keras["threads"]), None)
        if edge is None or None in (edge["speedup_vs_keras_predict"], edge["cold_start_speedup_vs_keras"],
                                     edge["memory_reduction_vs_keras"], edge["agreement"]):
            continue
        speedup = edge["speedup_vs_keras_predict"]
        cold = edge["cold_start_speedup_vs_keras"]
        memory = edge["memory_reduction_vs_keras"]
        found.append({
            "reference": keras["name"], "edge": edge["name"], "threads": keras["threads"], "batch_size": 1,
            "latency_speedup": speedup, "cold_start_speedup": cold, "memory_reduction": memory,
            "accuracy_delta": edge["accuracy"] - keras["accuracy"], "agreement": edge["agreement"],
            "meets_targets": {"latency_10x": speedup >= 10, "cold_start_3x": cold >= 3, "memory_3x": memory >= 3},
        })
    noisy = [f"{r['name']} ({r['threads']} thr, batch {r['batch_size']})" for r in result["rows"] if r.get("spread_wide")]
    return {"int8_vs_keras": found, "wide_latency_spread": noisy}


def verdict_lines(result: dict) -> list[str]:
    lines = []
    for item in result["summary"]["int8_vs_keras"]:
        lines.append(
            f"{item['edge']} vs Keras predict ({item['threads']} thread{'s' * (item['threads'] > 1)}, batch 1): "
            f"{item['latency_speedup']:.1f}× faster, cold start {item['cold_start_speedup']:.1f}× faster, "
            f"{item['memory_reduction']:.1f}× less peak memory; accuracy {item['accuracy_delta'] * 100:+.1f} points, "
            f"same label as Keras on {item['agreement']:.1%} of images"
        )
    noisy = result["summary"]["wide_latency_spread"]
    if noisy:
        lines.append(f"⚠ wide latency spread (p95 > 2× median) in {len(noisy)} row(s): the machine was busy; "
                     f"rerun on a quiet machine before quoting those latencies")
    return lines


def failure_lines(result: dict) -> list[str]:
    """One line per model that failed or is unverified, with the reason."""
    seen, lines = set(), []
    for row in result["rows"]:
        reason = row["reason"].removeprefix(f"{row['file']}: ")
        line = f"{row['status_icon']} {row['file']}: {reason}"
        if row["status"] != "ok" and row["reason"] and line not in seen:
            seen.add(line)
            lines.append(line)
    return lines


def title(result: dict) -> str:
    data = result["data"]
    return (f"edgecxr bench {result['run']}: {data['n_images']} images of {data['folder']}, "
            f"device {result['settings']['device']}")


def _table(rows: list[dict], columns, title_text: str, caption: str | None = None) -> Table:
    table = Table(title=title_text, title_justify="left", caption=caption, caption_justify="left")
    for header, key, spec in columns:
        table.add_column(header, justify="left" if spec in ("s", "q") else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(cell(row, key, spec) for _, key, spec in columns))
    return table


def rich_tables(result: dict) -> list[Table]:
    return [
        _table(quality_rows(result["rows"]), QUALITY_COLUMNS, f"{title(result)}: quality and fidelity to Keras"),
        _table(speed_rows(result["rows"]), SPEED_COLUMNS, "speed and footprint (latency = inference only; "
               "×Keras = Keras predict median / this one)", caption=describe(result["machine"])),
    ]


def markdown_table(headers: list[str], rows: list[list], left: int = 1) -> list[str]:
    """The lines of a Markdown table: the first `left` columns align left, the others (numbers)
    right; cells are written as given, a `|` inside one escaped. Every results page is built with it."""
    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    rule = "|" + "|".join(":--" if i < left else "--:" for i in range(len(headers))) + "|"
    return [line(headers), rule, *(line(row) for row in rows)]


def _markdown_table(rows: list[dict], columns) -> list[str]:
    left = next((i for i, (_, _, spec) in enumerate(columns) if spec not in ("s", "q")), len(columns))
    return markdown_table([header or "status" for header, _, _ in columns],
                          [[cell(row, key, spec) for _, key, spec in columns] for row in rows], left)


def markdown(result: dict) -> str:
    """Markdown tables ready for the README, with command, machine and date above them."""
    machine = result["machine"]
    settings = result["settings"]
    lines = [
        f"### {title(result)}",
        "",
        f"- command: `{result['command']}`",
        f"- machine: {describe(machine)}",
        f"- date: {result['created_at']}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in machine['versions'].items())}",
        f"- latency: one inference call on preprocessed inputs, median (p50) and p95 of {settings['repeats']} "
        f"timed calls after {settings['warmup']} warm-up calls; ×Keras = Keras `predict` median / this median "
        "(same threads and batch); prep = decode + preprocess one image; cold = fresh process to first "
        "prediction; RSS = that process's peak resident memory at its first prediction",
        "",
        *_markdown_table(quality_rows(result["rows"]), QUALITY_COLUMNS),
        "",
        *_markdown_table(speed_rows(result["rows"]), SPEED_COLUMNS),
    ]
    extra = verdict_lines(result) + failure_lines(result)
    if extra:
        lines.append("")
        lines.extend(f"- {line}" for line in extra)
    return "\n".join(lines) + "\n"
