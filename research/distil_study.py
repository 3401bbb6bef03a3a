"""The compact net taught by an ensemble: each training film's target is the teachers' mean-logit
probability instead of its label. Trains students and same-seed hard-label baselines on the
teachers' patient split, then (with --score, after `edgecxr convert` of each) scores them.

    python -m research.distil_study runs/demo runs/lite0 --seeds 42 43 44
    edgecxr convert research/runs/distil/student_s42 --quantize int8 --format tflite   # each run
    python -m research.distil_study runs/demo runs/lite0 --seeds 42 43 44 --score

The rule is research/distil_rule.md. Runs go to research/runs/distil/ (ignored by git); the results
to research/results/distil/.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgecxr.benchmarks.bench_report import markdown_table
from edgecxr.edge_runtime.console import console

from edgecxr.train.distillation import mean_logit

# arm -> label smoothing (the teachers' targets are soft). "consistent" is the addendum's S2: it
# trains on fixed augmented views, each with the teachers' answer on that same view.
ARMS = {"baseline": 0.1, "student": 0.0, "consistent": 0.0}
# research/ssl_rule.md: the default recipe (labels, smoothing 0.1) from a self-supervised trunk.
ARMS["ssl"] = 0.1
# research/ssl_teach_rule.md: the consistent-view student's recipe from that trunk.
ARMS["sslteach"] = 0.0
# Whom each candidate arm is compared with (the distillation arms: the label-trained baseline).
AGAINST = {"sslteach": "consistent"}
SEEDS_A_RULE_NEEDS = 3
AUC_MARGIN = 0.001  # rule 1
ACCURACY_MARGIN = 0.010  # rule 1
METRICS = ("roc_auc", "accuracy", "sensitivity", "specificity")


def run_name(arm: str, seed: int) -> str:
    return f"{arm}_s{seed}"


def teacher_targets(teacher_runs: list[Path], train_paths: list[str], train_labels: np.ndarray) -> np.ndarray:
    """The teachers' mean-logit probability on each un-augmented training film."""
    from edgecxr.edge_runtime.batching import predict_in_batches
    from edgecxr.edge_runtime.folders import LabelledImage
    from edgecxr.edge_runtime.preprocessing import scale_pixels
    from edgecxr.edge_runtime.run_folder import RunFolder
    from edgecxr.train.keras_backend import open_any_model
    from edgecxr.train.pixel_cache import load_pixels

    samples = [LabelledImage(Path(p), int(label)) for p, label in zip(train_paths, train_labels)]
    probs = []
    for path in teacher_runs:
        model = open_any_model(RunFolder.open(path).model_path)
        spec = model.metadata.preprocessing
        pixels = load_pixels(samples, spec, f"{path} on the training films").pixels
        probs.append(predict_in_batches(model.predict_proba, pixels,
                                        prepare=lambda b, s=spec: scale_pixels(b.astype(np.float32), s)))
    return mean_logit(probs).astype(np.float32)


def consistent_views(teacher_runs: list[Path], samples, student_spec, views: int, seed: int):
    """`views` augmented copies of each training film, drawn before any preprocessing, as the
    student's uint8 inputs, with the teachers' mean-logit probability on each same copy. The study
    first had its own copy of this; it now lives in the product (`edgecxr train --teacher`)."""
    from edgecxr.edge_runtime.run_folder import RunFolder
    from edgecxr.train.distillation import Teacher, teacher_views
    from edgecxr.train.keras_backend import open_any_model

    teachers = [Teacher(Path(path), open_any_model(RunFolder.open(path).model_path)) for path in teacher_runs]
    return teacher_views(teachers, samples, student_spec, views, seed)


def train_arm(splits, spec, config, pixels: np.ndarray, targets: np.ndarray, labels: np.ndarray,
              label_smoothing: float, seed: int, out: Path, split_file: Path, initialise=None) -> dict:
    """One compact run on `targets`, written as a run folder `convert` accepts; `initialise(model)`
    may set weights (a pretrained trunk) before fitting."""
    import keras

    from edgecxr.edge_runtime.atomic import write_json_atomic
    from edgecxr.edge_runtime.folders import LABELS, POSITIVE_LABEL
    from edgecxr.edge_runtime.metadata import ModelMetadata, write_metadata
    from edgecxr.edge_runtime.metrics import binary_metrics, pick_threshold
    from edgecxr.edge_runtime.run_folder import MODEL_FILE, SPLIT_FILE, METRICS_FILE
    from edgecxr.train.fitting import best_epoch_index, image_weights
    from edgecxr.train.model_specs import get_model_spec
    from edgecxr.train.pixel_cache import PixelSet
    from edgecxr.train.trainer import fit_on_targets, predict_pixels

    keras.utils.set_random_seed(seed)
    model = get_model_spec(config.arch).build(spec.input_shape, seed=seed, weights=None)
    if initialise is not None:
        initialise(model)
    # Class weights come from the true labels: the targets only say how sure to be.
    history = fit_on_targets(model, PixelSet(pixels, targets, [""] * len(targets)), splits.val, spec, config,
                             image_weights(labels, config.class_weights), label_smoothing, seed)
    val_probs = predict_pixels(model, splits.val.pixels, spec)
    threshold = pick_threshold(splits.val.labels, val_probs, config.target_sensitivity)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL_FILE)
    write_metadata(out / MODEL_FILE, ModelMetadata(
        labels=list(LABELS), positive_label=POSITIVE_LABEL, threshold=threshold, preprocessing=spec,
        format="keras", quantization="none", arch=config.arch,
        details={"parameters": int(model.count_params()),
                 "threshold_rule": f"highest threshold with validation sensitivity >= {config.target_sensitivity}",
                 "training": {"config": {**config.to_dict(), "label_smoothing": label_smoothing},
                              "init_seed": seed, "split_seed": config.seed,
                              "targets": "teachers' mean-logit probability" if label_smoothing == 0 else "labels"}}))
    metrics = binary_metrics(splits.val.labels, val_probs, threshold)
    best = best_epoch_index([float(v) for v in history["val_loss"]], config.epochs) + 1
    write_json_atomic(out / METRICS_FILE, {"validation": metrics, "epochs_run": len(history["loss"]),
                                          "best_epoch": best})
    (out / SPLIT_FILE).write_text(split_file.read_text(encoding="utf-8"), encoding="utf-8")
    return metrics


def train_all(teachers: list[Path], seeds: list[int], data: Path | None, out: Path, views: int = 0) -> dict:
    from edgecxr.edge_runtime.data_location import resolve_data_dir
    from edgecxr.edge_runtime.errors import EdgecxrError
    from edgecxr.edge_runtime.run_folder import SPLIT_FILE, RunFolder
    from edgecxr.train.hparams import TrainConfig
    from edgecxr.train.inputs import load_splits
    from edgecxr.train.model_specs import get_model_spec

    first = RunFolder.open(teachers[0])
    split_seed = first.metadata.details["training"]["config"]["seed"]
    config = TrainConfig(data=resolve_data_dir(data), out=out, arch="compact", seed=split_seed)
    spec = get_model_spec("compact").preprocess_spec(None, config.equalize, config.crop)
    splits = load_splits(config, spec)
    wanted = [str(s.path) for s in first.split("validation")]
    if [str(Path(p).resolve()) for p in splits.val.paths] != wanted:
        raise EdgecxrError(f"seed {split_seed} does not give {teachers[0]}'s validation patients here")
    if views:
        from edgecxr.edge_runtime.folders import LabelledImage
        from edgecxr.train.augment import NO_AUGMENTATION

        samples = [LabelledImage(Path(p), int(label)) for p, label in zip(splits.train.paths, splits.train.labels)]
        results = {"views": views}
        for seed in seeds:
            pixels, soft = consistent_views(teachers, samples, spec, views, seed)
            labels = np.tile(splits.train.labels, views)
            results[f"view_label_agreement_s{seed}"] = float(np.mean((soft >= 0.5) == (labels == 1)))
            name = run_name("consistent", seed)
            metrics = train_arm(splits, spec, replace(config, out=out / name, augment=NO_AUGMENTATION), pixels, soft,
                                labels, ARMS["consistent"], seed, out / name, first.path / SPLIT_FILE)
            console.print(f"{name}: validation AUC {metrics['roc_auc']:.4f}, accuracy {metrics['accuracy']:.3f}; "
                          f"teachers agree with {results[f'view_label_agreement_s{seed}']:.2%} of the views' labels",
                          highlight=False)
            results[name] = {k: metrics[k] for k in (*METRICS, "threshold")}
        return results
    soft = teacher_targets(teachers, splits.train.paths, splits.train.labels)
    agree = float(np.mean((soft >= 0.5) == (splits.train.labels == 1)))
    console.print(f"teachers agree with {agree:.2%} of the training labels", highlight=False)
    results = {"teacher_label_agreement_train": agree,
               "teacher_target_quantiles": np.quantile(soft, [0.01, 0.1, 0.5, 0.9, 0.99]).tolist()}
    for seed in seeds:
        for arm in ("baseline", "student"):
            targets = soft if arm == "student" else splits.train.labels.astype(np.float32)
            metrics = train_arm(splits, spec, replace(config, out=out / run_name(arm, seed)), splits.train.pixels,
                                targets, splits.train.labels, ARMS[arm], seed, out / run_name(arm, seed),
                                first.path / SPLIT_FILE)
            console.print(f"{run_name(arm, seed)}: validation AUC {metrics['roc_auc']:.4f}, "
                          f"accuracy {metrics['accuracy']:.3f}", highlight=False)
            results[run_name(arm, seed)] = {k: metrics[k] for k in (*METRICS, "threshold")}
    return results


def decide(rows: dict, seeds: list[int], candidate: str = "student", against: str = "baseline") -> dict:
    """The rule as written, for `candidate` against the same-seed runs of `against`; rows[name]
    holds 'val_int8' metrics, 'stress_mean' and 'verified'. Undecided (None) with fewer than the
    three seeds the rules name."""
    if len(seeds) < SEEDS_A_RULE_NEEDS:
        return {"checks": {}, "qualifies": None, "stress_wins": None,
                "note": f"the rule needs {SEEDS_A_RULE_NEEDS} seeds; scored: {', '.join(map(str, seeds))}"}

    def mean(arm, key, sub=None):
        return float(np.mean([(rows[run_name(arm, s)][sub][key] if sub else rows[run_name(arm, s)][key])
                              for s in seeds]))

    stress_wins = sum(rows[run_name(candidate, s)]["stress_mean"] > rows[run_name(against, s)]["stress_mean"]
                      for s in seeds)
    checks = {
        "1. int8 validation AUC and accuracy (seed means)":
            mean(candidate, "roc_auc", "val_int8") >= mean(against, "roc_auc", "val_int8") - AUC_MARGIN
            and mean(candidate, "accuracy", "val_int8") >= mean(against, "accuracy", "val_int8") - ACCURACY_MARGIN,
        "2. stress mean AUC: higher on average and in >= 2 of 3 seeds":
            mean(candidate, "stress_mean") > mean(against, "stress_mean") and stress_wins >= 2,
        "3. every student's int8 verifies": all(rows[run_name(candidate, s)]["verified"] for s in seeds),
    }
    return {"checks": checks, "qualifies": all(checks.values()), "stress_wins": int(stress_wins)}


def trained_arms(seeds: list[int], out: Path, arms=tuple(ARMS)) -> list[str]:
    return [arm for arm in arms if all((out / run_name(arm, s)).is_dir() for s in seeds)]


def score_all(seeds: list[int], data: Path | None, out: Path, artifact: str, arms=tuple(ARMS)) -> dict:
    from edgecxr.edge_runtime.batching import predict_in_batches
    from edgecxr.edge_runtime.data_location import resolve_data_dir
    from edgecxr.edge_runtime.preprocessing import scale_pixels
    from edgecxr.edge_runtime.run_folder import VERIFY_FILE, RunFolder
    from edgecxr.train.evaluate import score_folder
    from edgecxr.train.keras_backend import open_any_model
    from edgecxr.train.pixel_cache import load_pixels

    from .ensemble_study import scored
    from .shift_stress import shifted_summary, stress_rows

    folder = resolve_data_dir(data)
    rows = {}
    for seed in seeds:
        for arm in trained_arms(seeds, out, arms):
            path = out / run_name(arm, seed)
            run = RunFolder.open(path)
            verify = json.loads((run.export_dir / VERIFY_FILE).read_text(encoding="utf-8"))
            row = {"verified": verify["artifacts"].get(artifact, {}).get("status") == "ok",
                   "stress_mean": shifted_summary(stress_rows(path))["roc_auc"]}
            val = run.split("validation")
            val_labels = np.array([s.label for s in val])
            for kind, model_path in (("keras", run.model_path), ("int8", run.export_dir / artifact)):
                model = open_any_model(model_path)
                spec, threshold = model.metadata.preprocessing, model.metadata.threshold
                pixels = load_pixels(val, spec, f"{path.name} validation").pixels
                probs = predict_in_batches(model.predict_proba, pixels,
                                           prepare=lambda b: scale_pixels(b.astype(np.float32), spec))
                row[f"val_{kind}"] = scored(val_labels, probs, threshold)
                _, images, test_probs = score_folder(model, folder)
                row[f"test_{kind}"] = scored(images.labels, test_probs, threshold)
            rows[run_name(arm, seed)] = row
            console.print(f"{path.name}: stress mean {row['stress_mean']:.4f}, test/ int8 AUC "
                          f"{row['test_int8']['roc_auc']:.4f}", highlight=False)
    return rows


def markdown(rows: dict, seeds: list[int], decisions: dict, training: dict) -> str:
    arms = [arm for arm in ARMS if all(run_name(arm, s) in rows for s in seeds)]
    names = [run_name(arm, s) for s in seeds for arm in arms]
    headers = ["run", "val int8 AUC", "val int8 acc", "stress mean AUC (Keras)", "verified",
               "test/ int8 AUC", "acc", "sens", "spec", "test/ Keras AUC", "acc"]
    table = [[n, f"{rows[n]['val_int8']['roc_auc']:.4f}", f"{rows[n]['val_int8']['accuracy']:.4f}",
              f"{rows[n]['stress_mean']:.4f}", "yes" if rows[n]["verified"] else "no",
              *(f"{rows[n]['test_int8'][k]:.4f}" for k in METRICS),
              f"{rows[n]['test_keras']['roc_auc']:.4f}", f"{rows[n]['test_keras']['accuracy']:.4f}"] for n in names]
    for arm in arms:
        runs = [rows[run_name(arm, s)] for s in seeds]
        table.append([f"**{arm} mean**", f"{np.mean([r['val_int8']['roc_auc'] for r in runs]):.4f}",
                      f"{np.mean([r['val_int8']['accuracy'] for r in runs]):.4f}",
                      f"{np.mean([r['stress_mean'] for r in runs]):.4f}", "",
                      *(f"{np.mean([r['test_int8'][k] for r in runs]):.4f}" for k in METRICS),
                      f"{np.mean([r['test_keras']['roc_auc'] for r in runs]):.4f}",
                      f"{np.mean([r['test_keras']['accuracy'] for r in runs]):.4f}"])
    out = markdown_table(headers, table)
    for candidate, decision in decisions.items():
        out += ["", f"## Decision for {candidate} (pre-registered rule)", ""]
        out += [f"- {check}: {'pass' if ok else 'fail'}" for check, ok in decision["checks"].items()]
        out += [f"- **qualifies: {decision['qualifies']}**" if decision["qualifies"] is not None
                else f"- **not decided**: {decision['note']}"]
    if "teacher_label_agreement_train" in training:
        out += ["", f"Teachers on the training films: agree with {training['teacher_label_agreement_train']:.2%} "
                    f"of the labels; target quantiles (1, 10, 50, 90, 99 %): "
                    f"{[round(q, 3) for q in training.get('teacher_target_quantiles', [])]}"]
    views = training.get("consistent", {})
    if views:
        out += ["", f"Consistent views ({views['views']} per film): the teachers agree with "
                    + ", ".join(f"{views[f'view_label_agreement_s{s}']:.2%}" for s in seeds)
                    + " of the views' labels (seeds " + ", ".join(map(str, seeds)) + ")"]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("teachers", type=Path, nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--runs", type=Path, default=Path("research/runs/distil"))
    parser.add_argument("--out", type=Path, default=Path("research/results/distil"))
    parser.add_argument("--artifact", default="model_int8.tflite")
    parser.add_argument("--views", type=int, default=0,
                        help="train the consistent-view students on this many augmented views per film")
    parser.add_argument("--score", action="store_true", help="score the converted runs and apply the rule")
    parser.add_argument("--arms", nargs="+", choices=tuple(ARMS), default=list(ARMS),
                        help="score only these arms (the baseline among them)")
    args = parser.parse_args(argv)

    from edgecxr.benchmarks.machine import describe, machine_info
    from edgecxr.edge_runtime.atomic import write_json_atomic, write_text_atomic

    args.out.mkdir(parents=True, exist_ok=True)
    training_file = args.out / "training.json"
    if not args.score:
        training = json.loads(training_file.read_text(encoding="utf-8")) if training_file.is_file() else {}
        result = {**train_all(args.teachers, args.seeds, args.data, args.runs, args.views), "machine": machine_info()}
        if args.views:
            training["consistent"] = result
        else:
            training = {**result, **({"consistent": training["consistent"]} if "consistent" in training else {})}
        write_json_atomic(training_file, training)
        console.print(f"trained -> {args.runs}; convert each run, then rerun with --score", highlight=False)
        return 0
    machine = machine_info()
    rows = score_all(args.seeds, args.data, args.runs, args.artifact, args.arms)
    arms = trained_arms(args.seeds, args.runs, args.arms)
    decisions = {arm: decide(rows, args.seeds, arm, AGAINST.get(arm, "baseline")) for arm in arms
                 if arm != "baseline" and AGAINST.get(arm, "baseline") in arms}
    training = json.loads(training_file.read_text(encoding="utf-8")) if training_file.is_file() else {}
    write_json_atomic(args.out / "distil.json", {"rows": rows, "decisions": decisions, "machine": machine})
    write_text_atomic(args.out / "distil.md",
                      f"Compact {', '.join(a for a in args.arms if a != 'baseline')} runs against same-seed baselines (teachers "
                      f"of the distillation arms: {', '.join(map(str, args.teachers))}) "
                      f"({machine['date']}, {describe(machine)}).\n\n" + markdown(rows, args.seeds, decisions, training))
    console.print(", ".join(f"{arm} qualifies: {d['qualifies']}" for arm, d in decisions.items())
                  + f" -> {args.out / 'distil.md'}", highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
