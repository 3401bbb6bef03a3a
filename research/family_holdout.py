"""Does a NORMAL filename family of train/ stand in for another site? Train without it and see.

test/'s healthy children score higher than validation's, and validation (the same patients'
hospital and batches as training) cannot show it, so nothing can be chosen against that shift
honestly. The NORMAL images of train/ come in two filename families, `IM-…` and `NORMAL2-IM-…`,
which look like two acquisition batches. If leaving one family out of training made its images
score as test/'s NORMAL images do, that family would be a validation for the shift built from
train/ alone. This trains the default compact model once per family with that family's NORMAL
images removed (all PNEUMONIA images kept; the patient split as usual), then scores, at the run's
own threshold, its validation NORMAL images of the family it kept and every image of the family it
never saw. test/ is not read.

    python -m research.family_holdout --out research/results/family_holdout

A run folder RUNS/without-FAMILY that already holds a model is reused (pass --retrain to train again).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


from edgecxr.benchmarks.bench_report import markdown_table
from edgecxr.edge_runtime.atomic import write_json_atomic, write_text_atomic
from edgecxr.edge_runtime.console import console

FAMILIES = {"IM": "IM-", "NORMAL2": "NORMAL2-"}  # name -> file-name prefix in train/NORMAL


def family_of(path: Path) -> str | None:
    return next((name for name, prefix in FAMILIES.items() if path.name.startswith(prefix)), None)


def data_without(train_dir: Path, family: str, root: Path) -> Path:
    """A Kaggle-layout folder of links: train/ without `family`'s NORMAL images."""
    for label in ("NORMAL", "PNEUMONIA"):
        (root / "train" / label).mkdir(parents=True, exist_ok=True)
        for image in sorted((train_dir / label).iterdir()):
            link = root / "train" / label / image.name
            if (label == "PNEUMONIA" or family_of(image) != family) and not link.exists():
                link.symlink_to(image.resolve())
    return root


def normal_score(model, paths: list[Path], threshold: float) -> dict:
    """Specificity and mean PNEUMONIA probability over images that are all NORMAL."""
    from edgecxr.edge_runtime.preprocessing import preprocess
    from edgecxr.edge_runtime.batching import predict_in_batches

    spec = model.metadata.preprocessing
    probs = predict_in_batches(model.predict_proba, np.stack([preprocess(p, spec) for p in paths]))
    return {"n": len(paths), "specificity": float((probs < threshold).mean()), "mean_p": float(probs.mean())}


def family_row(left_out: str, args) -> dict:
    from edgecxr.edge_runtime.run_folder import RunFolder
    from edgecxr.edge_runtime.data_location import resolve_data_dir
    from edgecxr.train.hparams import TrainConfig
    from edgecxr.train.keras_backend import open_any_model
    from edgecxr.train.trainer import train

    train_dir = resolve_data_dir(args.data) / "train"
    run_path = args.runs / f"without-{left_out}"
    if args.retrain or not (run_path / "model.keras").is_file():
        data = data_without(train_dir, left_out, args.runs / f"data-without-{left_out}")
        train(TrainConfig(data=data, out=run_path, seed=args.seed, patience=args.patience, overwrite=True))
    run = RunFolder.open(run_path)
    model = open_any_model(run.model_path)
    threshold = model.metadata.threshold
    kept = [s.path for s in run.split("validation") if s.label == 0]
    unseen = sorted(p for p in (train_dir / "NORMAL").iterdir() if family_of(p) == left_out)
    training = model.metadata.details["training"]
    return {"left_out": left_out, "run": str(run_path), "threshold": threshold,
            "epochs_run": training["epochs_run"], "best_epoch": training["best_epoch"],
            "validation_normal_kept_family": normal_score(model, kept, threshold),
            "left_out_family": normal_score(model, unseen, threshold)}


def markdown(rows: list[dict], header: str) -> str:
    headers = ["NORMAL family left out", "epochs (best)", "threshold", "validation NORMAL, kept family: specificity (n)",
               "left-out family: specificity (n)", "mean p NORMAL kept / left out"]
    cells = []
    for row in rows:
        kept, unseen = row["validation_normal_kept_family"], row["left_out_family"]
        cells.append([row["left_out"], f"{row['epochs_run']} ({row['best_epoch']})", f"{row['threshold']:.3f}",
                      f"{kept['specificity']:.3f} ({kept['n']})", f"{unseen['specificity']:.3f} ({unseen['n']})",
                      f"{kept['mean_p']:.3f} / {unseen['mean_p']:.3f}"])
    return "\n".join([header, "", *markdown_table(headers, cells)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--runs", type=Path, default=Path("runs/family_holdout"))
    parser.add_argument("--out", type=Path, default=Path("research/results/family_holdout"))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--patience", type=int, default=3, help="early-stopping patience (the default's is 3)")
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args(argv)

    from edgecxr.benchmarks.machine import describe, machine_info

    machine = machine_info()
    rows = [family_row(family, args) for family in FAMILIES]
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "family_holdout.json", {"rows": rows, "machine": machine,
                                                         "settings": {k: str(v) for k, v in vars(args).items()}})
    header = (f"Compact model trained without one NORMAL filename family of train/ (seed {args.seed}, patience "
              f"{args.patience}); its NORMAL images scored at the run's threshold ({machine['date']}, "
              f"{describe(machine)})")
    table = markdown(rows, header)
    write_text_atomic(args.out / "family_holdout.md", table)
    console.print(table, highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
