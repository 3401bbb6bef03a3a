"""Compact CNN against ImageNet backbones and training strategies, all as int8 TFLite, on test/.

The project's answer to the seed study's six-backbone table. Every entry trains on the same
patient split of train/ (same seed and validation fraction), picks its threshold on validation,
is converted to int8 TFLite (verified against its Keras model), and is then scored once on test/.

    python -m research.compare_backbones --out research/results/backbones \\
        --entries compact efficientnet_lite0:feature-extract efficientnet_lite0:feature-extract+aug \\
                  efficientnet_lite0:fine-tune

Entries are ARCH or ARCH:STRATEGY with STRATEGY one of feature-extract, feature-extract+aug,
fine-tune. A finished run folder is reused (pass --retrain to train again). An entry that cannot
run (e.g. Keras ImageNet weights offline) becomes a row with its error instead of stopping the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


from edgecxr.benchmarks.bench_report import markdown_table
from edgecxr.edge_runtime.atomic import atomic_path, write_json_atomic, write_text_atomic
from edgecxr.edge_runtime.console import console
from edgecxr.edge_runtime.errors import EdgecxrError

STRATEGIES = ("feature-extract", "feature-extract+aug", "fine-tune")
COLUMNS = ("entry", "accuracy", "roc_auc", "sensitivity", "specificity", "threshold", "int8_size_mb",
           "latency_ms", "train_seconds", "image_size", "status")


def parse_entry(text: str) -> tuple[str, str | None]:
    arch, _, strategy = text.partition(":")
    if arch == "compact":
        return arch, None
    strategy = strategy or "fine-tune"
    if strategy not in STRATEGIES:
        raise EdgecxrError(f"entry {text!r}: strategy must be one of {', '.join(STRATEGIES)}")
    return arch, strategy


def train_entry(arch: str, strategy: str | None, args, run: Path) -> Path:
    from edgecxr.edge_runtime.data_location import resolve_data_dir
    from edgecxr.train.augment import NO_AUGMENTATION, AugmentConfig
    from edgecxr.train.hparams import TrainConfig
    from edgecxr.train.trainer import train

    options = dict(data=resolve_data_dir(args.data), out=run, arch=arch, seed=args.seed, overwrite=True)
    if arch != "compact":
        options.update(
            image_size=args.image_size, weights=args.weights, epochs=args.epochs, head_epochs=args.head_epochs,
            strategy="fine-tune" if strategy == "fine-tune" else "feature-extract",
            fine_tune_from=args.fine_tune_from, augment_passes=args.augment_passes,
            augment=NO_AUGMENTATION if strategy == "feature-extract" else AugmentConfig())
        if strategy == "feature-extract":
            options["epochs"] = args.epochs + args.head_epochs  # head only: give it the whole budget
    return train(TrainConfig(**options))


def int8_tflite(run: Path, calibration_size: int) -> Path:
    from edgecxr.convert.exporter import ConvertOptions, convert_run

    target = run / "export" / "model_int8.tflite"
    if not target.is_file():
        results = convert_run(ConvertOptions(run=run, quantize="int8", format="tflite",
                                             calibration_size=calibration_size))
        [result] = [r for r in results if r.quantization == "int8"]  # fp32 comes along as the reference
        if result.status == "failed":
            raise EdgecxrError(f"int8 conversion failed: {result.error}")
    return target


def single_image_latency_ms(model: Path, threads: int, repeats: int = 50) -> float:
    """Median wall time of one preprocessed image through the edge runtime (preprocessing excluded)."""
    from edgecxr.benchmarks.worker import time_inference
    from edgecxr.edge_runtime.backends import open_backend

    backend = open_backend(model, threads=threads)
    spec = backend.metadata.preprocessing
    image = np.random.default_rng(0).uniform(0, 255, (1, *spec.input_shape)).astype(np.float32)
    image = image * spec.scale + spec.offset
    return time_inference(backend.predict_proba, image, batch_size=1, warmup=5, repeats=repeats)["latency_ms_p50"]


def score_entry(text: str, args) -> dict:
    from edgecxr.edge_runtime.data_location import resolve_data_dir
    from edgecxr.edge_runtime.metadata import read_metadata
    from edgecxr.train.evaluate import evaluate

    arch, strategy = parse_entry(text)
    run = Path(args.out) / "runs" / text.replace(":", "-").replace("+", "-")
    row = {"entry": text}
    try:
        if args.retrain or not (run / "model.keras").is_file():
            train_entry(arch, strategy, args, run)
        model = int8_tflite(run, args.calibration_size)
        metrics = evaluate(model, resolve_data_dir(args.data), plots_dir=None)
        training = read_metadata(run / "model.keras").details["training"]
        row.update({k: metrics[k] for k in ("accuracy", "roc_auc", "sensitivity", "specificity", "threshold")})
        row.update({
            "int8_size_mb": model.stat().st_size / 2**20,
            "latency_ms": single_image_latency_ms(model, args.threads),
            "train_seconds": training["train_seconds"],
            "image_size": read_metadata(model).preprocessing.height,
            "status": "ok", "run": str(run), "confusion_matrix": metrics["confusion_matrix"],
        })
    except EdgecxrError as exc:
        row["status"] = f"error: {exc}"
        console.print(f"[red]{text}[/red]: {exc}", highlight=False)
    return row


def markdown(rows: list[dict], header: str) -> str:
    def cell(row, key):
        value = row.get(key)
        if isinstance(value, float):
            return f"{value:.1f}" if key in ("int8_size_mb", "latency_ms", "train_seconds") else f"{value:.3f}"
        return "" if value is None else str(value)

    table = markdown_table(list(COLUMNS), [[cell(row, key) for key in COLUMNS] for row in rows])
    return "\n".join([header, "", *table]) + "\n"


def bar_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [row for row in rows if row.get("status") == "ok"]
    if not done:
        return
    metrics = ("accuracy", "roc_auc", "sensitivity", "specificity")
    width = 0.8 / len(metrics)
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(done)), 4))
    positions = np.arange(len(done))
    for i, metric in enumerate(metrics):
        axis.bar(positions + i * width, [row[metric] for row in done], width, label=metric)
    axis.set_xticks(positions + width * (len(metrics) - 1) / 2, [row["entry"] for row in done], rotation=20,
                    ha="right")
    axis.set_ylim(0.5, 1.0)
    axis.set_title("int8 TFLite on test/ at the validation-picked threshold")
    axis.legend(loc="lower right", fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", nargs="+", default=[
        "compact", *(f"efficientnet_lite0:{s}" for s in STRATEGIES),
        *(f"{a}:fine-tune" for a in ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"))])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("research/results/backbones"))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--weights", default=None, help="imagenet (default), none or a weights file")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--fine-tune-from", default="block12")
    parser.add_argument("--augment-passes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--calibration-size", type=int, default=1000, help="int8 calibration images (train split)")
    parser.add_argument("--threads", type=int, default=2, help="TFLite threads for the latency column")
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args(argv)

    from edgecxr.benchmarks.machine import describe, machine_info

    machine = machine_info()
    rows = [score_entry(entry, args) for entry in args.entries]
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "compare_backbones.json", {
        "rows": rows, "machine": machine, "settings": {k: str(v) for k, v in vars(args).items()}})
    header = (f"Backbones and strategies, int8 TFLite on test/ ({machine['date']}, {describe(machine)}; "
              f"latency: median of 50 single-image calls, {args.threads} threads)")
    write_text_atomic(args.out / "compare_backbones.md", markdown(rows, header))
    bar_plot(rows, args.out / "compare_backbones.png")
    console.print(markdown(rows, header), highlight=False)
    return 0 if all(row.get("status") == "ok" for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
