"""How far could any threshold take a model on test/? A ceiling, measured, never used to choose.

The models miss their test/ accuracy targets while their validation is near perfect. Before asking
for a better threshold rule, it is worth knowing whether any threshold at all would do: this scores
each model on the evaluation folder and reports, beside its accuracy at the stored (validation-
picked) threshold, the best accuracy that a threshold picked on these very labels would give. That
second number is not a result anyone may quote as the model's accuracy: picking a threshold on
test/ is what the project forbids. It only says whether the gap is the threshold's or the ranking's.

    python -m research.threshold_ceiling runs/demo/model.keras runs/lite0/model.keras \\
        --out research/results/threshold_ceiling
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


from edgecxr.benchmarks.bench_report import markdown_table
from edgecxr.edge_runtime.atomic import write_json_atomic, write_text_atomic
from edgecxr.edge_runtime.console import console


def best_threshold_accuracy(labels: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """(highest accuracy of `p >= t` over every threshold t, the lowest t that gives it)."""
    candidates = np.concatenate([np.unique(probabilities), [np.inf]])  # inf: everything NORMAL
    accuracies = [float(((probabilities >= t) == labels).mean()) for t in candidates]
    best = int(np.argmax(accuracies))
    return accuracies[best], float(candidates[best])


def ceiling_row(model_path: Path, data: Path | None) -> dict:
    from edgecxr.edge_runtime.data_location import resolve_data_dir
    from edgecxr.edge_runtime.metrics import binary_metrics
    from edgecxr.train.evaluate import score_folder
    from edgecxr.train.keras_backend import open_any_model

    model = open_any_model(model_path)
    folder, images, probabilities = score_folder(model, resolve_data_dir(data))
    stored = binary_metrics(images.labels, probabilities, model.metadata.threshold)
    ceiling, threshold = best_threshold_accuracy(images.labels, probabilities)
    return {"model": str(model_path), "data": str(folder), "n_images": int(len(images.labels)),
            "roc_auc": stored["roc_auc"], "stored_threshold": model.metadata.threshold,
            "accuracy_at_stored_threshold": stored["accuracy"],
            "best_accuracy_any_threshold": ceiling, "threshold_giving_it": threshold}


def markdown(rows: list[dict], header: str) -> str:
    headers = ["model", "n", "ROC AUC", "accuracy at stored threshold",
               "best accuracy, any threshold (picked on these labels: a ceiling, not a result)"]
    table = [[row["model"], row["n_images"], f"{row['roc_auc']:.3f}",
              f"{row['accuracy_at_stored_threshold']:.3f} ({row['stored_threshold']:.3f})",
              f"{row['best_accuracy_any_threshold']:.3f} ({row['threshold_giving_it']:.3f})"] for row in rows]
    return "\n".join([header, "", *markdown_table(headers, table)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path, nargs="+", help="model files (Keras, TFLite or ONNX)")
    parser.add_argument("--data", type=Path, default=None, help="Kaggle root (its test/) or a class folder")
    parser.add_argument("--out", type=Path, default=Path("research/results/threshold_ceiling"))
    args = parser.parse_args(argv)

    from edgecxr.benchmarks.machine import describe, machine_info

    machine = machine_info()
    rows = [ceiling_row(model, args.data) for model in args.models]
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "threshold_ceiling.json", {"rows": rows, "machine": machine})
    table = markdown(rows, f"Accuracy at the stored threshold and the best any threshold could give "
                           f"({machine['date']}, {describe(machine)})")
    write_text_atomic(args.out / "threshold_ceiling.md", table)
    console.print(table, highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
