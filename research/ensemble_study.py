"""Two models as one: the mean of their logits, on validation, under the stresses, and on test/.

Each member keeps its own preprocessing; the same decoded film feeds every member. The members must
share a patient split, or one of them has seen the other's validation patients. The ensemble's
threshold is picked on validation by training's own rule, for the Keras and the exported ensemble
apart. The decision is the pre-registered rule's (`research/ensemble_rule.md`); test/ is scored for
the record after it.

    python -m research.ensemble_study runs/demo runs/lite0 --artifact model_int8.tflite
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from edgecxr.benchmarks.bench_report import markdown_table
from edgecxr.edge_runtime.console import console

from edgecxr.train.distillation import mean_logit

from .shift_stress import STRESSES, stressed_pixels

TARGET_SENSITIVITY = 0.95  # training's threshold rule
AUC_MARGIN = 0.001  # rule 1
ACCURACY_MARGIN = 0.010  # rule 1
MAX_TOTAL_MB = 8.0  # rule 3
METRICS = ("roc_auc", "accuracy", "sensitivity", "specificity")


def same_split(runs) -> None:
    from edgecxr.edge_runtime.errors import EdgecxrError

    first = [str(s.path) for s in runs[0].split("validation")]
    for run in runs[1:]:
        if [str(s.path) for s in run.split("validation")] != first:
            raise EdgecxrError(f"{run.path} and {runs[0].path} were validated on different patients")


def scored(labels, probs, threshold: float | None = None) -> dict:
    """Metrics at `threshold`, or at the validation rule's threshold on these labels when None."""
    from edgecxr.edge_runtime.metrics import binary_metrics, pick_threshold

    if threshold is None:
        threshold = pick_threshold(labels, probs, TARGET_SENSITIVITY)
    metrics = binary_metrics(labels, probs, threshold)
    return {key: metrics[key] for key in (*METRICS, "threshold")}


def decide(validation: dict, stress_means: dict, sizes_mb: dict, members: list[str]) -> dict:
    """The rule as written: `validation[name]` holds int8 validation metrics, `stress_means[name]` the
    mean AUC over the stressed rows (Keras), for each member and for "ensemble"."""
    best_auc = max(validation[m]["roc_auc"] for m in members)
    best_accuracy = max(validation[m]["accuracy"] for m in members)
    best_stress = max(stress_means[m] for m in members)
    checks = {
        "1. validation AUC and accuracy": validation["ensemble"]["roc_auc"] >= best_auc - AUC_MARGIN
        and validation["ensemble"]["accuracy"] >= best_accuracy - ACCURACY_MARGIN,
        "2. stress mean AUC above the better member's": stress_means["ensemble"] > best_stress,
        "3. int8 files together <= 8 MB": sum(sizes_mb.values()) <= MAX_TOTAL_MB,
    }
    return {"checks": checks, "qualifies": all(checks.values())}


def stress_table(runs, models, labels, paths) -> tuple[list[dict], dict]:
    """AUC of each member and of the ensemble under every stress (Keras), and their stressed means."""
    from edgecxr.edge_runtime.batching import predict_in_batches
    from edgecxr.edge_runtime.console import progress_bar
    from edgecxr.edge_runtime.metrics import roc_auc
    from edgecxr.edge_runtime.preprocessing import scale_pixels

    rows = []
    with progress_bar() as progress:
        task = progress.add_task("stressing the members", total=len(STRESSES))
        for stress in STRESSES:
            probs = {}
            for run, model in zip(runs, models):
                spec = model.metadata.preprocessing
                inputs = scale_pixels(stressed_pixels(paths, spec, stress).astype(np.float32), spec)
                probs[run.path.name] = predict_in_batches(model.predict_proba, inputs)
            probs["ensemble"] = mean_logit(list(probs.values()))
            rows.append({"stress": stress.name, **{name: roc_auc(labels, p) for name, p in probs.items()}})
            progress.advance(task)
    names = [*(run.path.name for run in runs), "ensemble"]
    means = {name: float(np.mean([row[name] for row in rows if row["stress"] != "clean"])) for name in names}
    return rows, means


def latency_ms(path: Path, repeats: int = 200) -> float:
    """p50 of one film through the artifact alone, one thread, batch 1."""
    from edgecxr.train.keras_backend import open_any_model

    backend = open_any_model(path, threads=1)
    sample = np.zeros((1, *backend.metadata.preprocessing.input_shape), dtype=np.float32)
    for _ in range(10):
        backend.predict_proba(sample)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend.predict_proba(sample)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def study(run_paths: list[Path], artifact: str, data: Path | None) -> dict:
    from edgecxr.edge_runtime.batching import predict_in_batches
    from edgecxr.edge_runtime.data_location import resolve_data_dir
    from edgecxr.edge_runtime.errors import EdgecxrError
    from edgecxr.edge_runtime.preprocessing import scale_pixels
    from edgecxr.edge_runtime.run_folder import RunFolder
    from edgecxr.train.evaluate import score_folder
    from edgecxr.train.keras_backend import open_any_model
    from edgecxr.train.pixel_cache import load_pixels

    runs = [RunFolder.open(path) for path in run_paths]
    same_split(runs)
    names = [run.path.name for run in runs]
    if len(set(names)) != len(names):
        raise EdgecxrError("the members' run folders need different names")
    samples = runs[0].split("validation")
    paths = [str(s.path) for s in samples]
    labels = np.array([s.label for s in samples])
    keras_models = [open_any_model(run.model_path) for run in runs]
    exported = [open_any_model(run.path / "export" / artifact, threads=2) for run in runs]

    rows, stress_means = stress_table(runs, keras_models, labels, paths)

    validation, test, test_probs = {"keras": {}, "int8": {}}, {"keras": {}, "int8": {}}, {"keras": {}, "int8": {}}
    folder = resolve_data_dir(data)
    for kind, models in (("keras", keras_models), ("int8", exported)):
        val_probs = {}
        for name, model in zip(names, models):
            spec = model.metadata.preprocessing
            pixels = load_pixels(samples, spec, f"{name} validation").pixels
            val_probs[name] = predict_in_batches(model.predict_proba, pixels,
                                                 prepare=lambda b, s=spec: scale_pixels(b.astype(np.float32), s))
            validation[kind][name] = scored(labels, val_probs[name], model.metadata.threshold)
            _, images, probs = score_folder(model, folder)
            if images.skipped:
                raise EdgecxrError(f"{len(images.skipped)} test/ film(s) could not be read; the members must see the same films")
            test_probs[kind][name] = probs
            test_labels = images.labels
            test[kind][name] = scored(test_labels, probs, model.metadata.threshold)
        ensemble_val = mean_logit(list(val_probs.values()))
        validation[kind]["ensemble"] = scored(labels, ensemble_val)
        test_probs[kind]["ensemble"] = mean_logit([test_probs[kind][n] for n in names])
        test[kind]["ensemble"] = scored(test_labels, test_probs[kind]["ensemble"],
                                        validation[kind]["ensemble"]["threshold"])

    sizes_mb = {name: (run.path / "export" / artifact).stat().st_size / 1e6 for name, run in zip(names, runs)}
    decision = decide(validation["int8"], stress_means, sizes_mb, names)
    latency = {name: latency_ms(run.path / "export" / artifact) for name, run in zip(names, runs)}
    threshold_of = {name: m.metadata.threshold for name, m in zip(names, exported)}
    labels_of = {name: test_probs["int8"][name] >= threshold_of[name] for name in names}
    disagreements = int(np.sum(labels_of[names[0]] != labels_of[names[1]])) if len(names) == 2 else None
    return {"members": {name: str(path) for name, path in zip(names, run_paths)}, "artifact": artifact,
            "stress_rows": rows, "stress_means": stress_means, "validation": validation,
            "decision": decision, "sizes_mb": sizes_mb, "latency_ms_p50_1thread": latency,
            "test": test, "test_member_label_disagreements": disagreements, "n_test": int(len(test_labels)),
            "n_validation": int(len(labels))}


def markdown(result: dict) -> str:
    names = [*result["members"], "ensemble"]
    out = ["## Stresses (Keras, validation AUC)", ""]
    out += markdown_table(["stress", *names], [[row["stress"], *(f"{row[n]:.4f}" for n in names)]
                                               for row in result["stress_rows"]]
                          + [["**mean of stressed**", *(f"{result['stress_means'][n]:.4f}" for n in names)]])
    for part in ("validation", "test"):
        for kind in ("int8", "keras"):
            out += ["", f"## {part}, {kind} (member: stored threshold; ensemble: validation rule's)", ""]
            out += markdown_table(["model", *METRICS, "threshold"],
                                  [[n, *(f"{result[part][kind][n][k]:.4f}" for k in (*METRICS, "threshold"))]
                                   for n in names])
    out += ["", "## Decision (pre-registered rule)", ""]
    out += [f"- {check}: {'pass' if ok else 'fail'}" for check, ok in result["decision"]["checks"].items()]
    out += [f"- **qualifies: {result['decision']['qualifies']}**", "",
            f"int8 sizes (MB): {result['sizes_mb']}; x86 p50 ms, 1 thread: {result['latency_ms_p50_1thread']}; "
            f"member label disagreements on test/: {result['test_member_label_disagreements']} of {result['n_test']}"]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--artifact", default="model_int8.tflite")
    parser.add_argument("--data", type=Path, default=None, help="Kaggle root (its test/)")
    parser.add_argument("--out", type=Path, default=Path("research/results/ensemble"))
    parser.add_argument("--name", default="ensemble")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("an ensemble needs at least two runs")

    from edgecxr.benchmarks.machine import describe, machine_info
    from edgecxr.edge_runtime.atomic import write_json_atomic, write_text_atomic

    machine = machine_info()
    result = study(args.runs, args.artifact, args.data)
    result["machine"] = machine
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / f"{args.name}.json", result)
    write_text_atomic(args.out / f"{args.name}.md",
                      f"Mean-logit ensemble of {', '.join(result['members'])} ({machine['date']}, {describe(machine)}).\n\n"
                      + markdown(result))
    console.print(f"qualifies: {result['decision']['qualifies']} -> {args.out / args.name}.md", highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
