"""How much the default compact model's results move with the seed: train, validate, test per seed.

One number from one seed says little: the seed picks the validation patients, the initial
weights, the augmentation and the batch order. This trains `edgecxr train` with its defaults once
per seed, scores the Keras model on test/ at its validation-picked threshold, and writes one table
with the mean and the spread. No seed is "picked": all of them are reported.

    python -m research.seed_spread --seeds 42 43 44 --out research/results/seeds

A run folder RUNS/seedN that already holds a model is reused (pass --retrain to train again).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


from edgecxr.benchmarks.bench_report import markdown_table
from edgecxr.edge_runtime.atomic import write_json_atomic, write_text_atomic
from edgecxr.edge_runtime.console import console

METRICS = ("accuracy", "roc_auc", "sensitivity", "specificity")


def seed_row(seed: int, args) -> dict:
    from edgecxr.edge_runtime.data_location import resolve_data_dir
    from edgecxr.edge_runtime.metadata import read_metadata
    from edgecxr.train.evaluate import evaluate
    from edgecxr.train.hparams import TrainConfig
    from edgecxr.train.trainer import train

    data = resolve_data_dir(args.data)
    run = Path(args.runs) / f"seed{seed}"
    if args.retrain or not (run / "model.keras").is_file():
        train(TrainConfig(data=data, out=run, seed=seed, overwrite=True))
    details = read_metadata(run / "model.keras").details["training"]
    if details["config"]["seed"] != seed or details["config"]["arch"] != "compact":
        raise SystemExit(f"{run} was not trained as the default compact model with seed {seed}; pass --retrain")
    validation = json.loads((run / "metrics.json").read_text())["validation"]
    test = evaluate(run, data, plots_dir=None)
    return {
        "seed": seed, "run": str(run), "threshold": test["threshold"],
        "train_seconds": details["train_seconds"], "epochs_run": details["epochs_run"],
        "best_epoch": details["best_epoch"],
        "validation": {k: validation[k] for k in METRICS},
        "test": {k: test[k] for k in METRICS}, "test_confusion_matrix": test["confusion_matrix"],
    }


def summary(rows: list[dict]) -> dict:
    """Mean, sample standard deviation, min and max of each metric over the seeds."""
    result = {}
    for split in ("validation", "test"):
        for metric in METRICS:
            values = np.array([row[split][metric] for row in rows])
            result[f"{split}_{metric}"] = {
                "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "min": float(values.min()), "max": float(values.max())}
    return result


def markdown(rows: list[dict], stats: dict, header: str) -> str:
    columns = [f"{split} {metric}" for split in ("val", "test") for metric in METRICS]
    table = []
    for row in rows:
        values = [row[split][metric] for split in ("validation", "test") for metric in METRICS]
        table.append([row["seed"], f"{row['threshold']:.3f}", f"{row['train_seconds']:.0f}",
                      *(f"{v:.3f}" for v in values)])
    cells = [stats[f"{split}_{metric}"] for split in ("validation", "test") for metric in METRICS]
    table.append(["mean ± sd", "", "", *(f"{c['mean']:.3f} ± {c['std']:.3f}" for c in cells)])
    return "\n".join([header, "", *markdown_table(["seed", "threshold", "train s", *columns], table)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--runs", type=Path, default=Path("runs/seeds"))
    parser.add_argument("--out", type=Path, default=Path("research/results/seeds"))
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) < 2:
        parser.error("give at least two different seeds")

    from edgecxr.benchmarks.machine import describe, machine_info

    machine = machine_info()
    rows = [seed_row(seed, args) for seed in args.seeds]
    stats = summary(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "seed_spread.json", {"rows": rows, "summary": stats, "machine": machine,
                                                      "settings": {k: str(v) for k, v in vars(args).items()}})
    header = (f"Default compact model (`edgecxr train`, 8 epochs) per seed; Keras model on test/ at the "
              f"validation-picked threshold ({machine['date']}, {describe(machine)})")
    table = markdown(rows, stats, header)
    write_text_atomic(args.out / "seed_spread.md", table)
    console.print(table, highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
