"""Augmentation for what a new site changes (framing, exposure), chosen by a rule written first.

Trains the default compact model with each candidate augmentation of CANDIDATES and each seed,
scores every run on its own validation split, clean and under the acquisition changes of
research/shift_stress.py at the run's own threshold, and applies the rule of
research/shift_augment_rule.md literally (`decide`). test/ is scored afterwards as a secondary,
never read by `decide`.

    python -m research.shift_augment --out research/results/shift_augment

A run folder RUNS/NAME-seedN that already holds a model trained with that setting is reused, and a
run's scores are kept in OUT/runs/NAME-seedN.json (pass --retrain / --rescore to redo them), so
the study can be run in parts (--candidates, --seeds) and finished by a last call without them.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import numpy as np

from edgecxr.benchmarks.bench_report import markdown_table
from edgecxr.edge_runtime.atomic import write_json_atomic, write_text_atomic
from edgecxr.edge_runtime.console import console
from edgecxr.train.augment import NO_AUGMENTATION, AugmentConfig

BASELINE = "baseline"
# Written into research/shift_augment_rule.md before any run; changing them means a new rule.
CANDIDATES = {
    BASELINE: AugmentConfig(),
    # The probe: framing and exposure together, on top of the default jitter.
    "frame+exposure": AugmentConfig(brightness=0.15, contrast=0.30, frame_area=0.65, frame_aspect=0.29,
                                    gamma=0.35),
    # Its two halves, to see which one carries a gain or a loss.
    "frame-mild": AugmentConfig(frame_area=0.30, frame_aspect=0.15),
    "exposure": AugmentConfig(brightness=0.15, contrast=0.30, gamma=0.35),
}
SEEDS = (42, 43)
# Guard rails and margin of the rule (candidate mean minus baseline mean, over the seeds).
MAX_CLEAN_AUC_DROP = 0.003
MAX_HELD_OUT_ACCURACY_DROP = 0.010
MAX_STRESSED_SENSITIVITY_DROP = 0.020


def saved_augment(details: dict) -> dict:
    """The augmentation a run was trained with; fields added since it was trained were off then."""
    saved = details["config"]["augment"]
    return {f.name: saved.get(f.name, getattr(NO_AUGMENTATION, f.name)) for f in fields(AugmentConfig)}


def train_run(name: str, seed: int, args) -> Path:
    from edgecxr.edge_runtime.metadata import read_metadata
    from edgecxr.train.hparams import TrainConfig
    from edgecxr.train.trainer import train

    run = args.runs / f"{name}-seed{seed}"
    augment = CANDIDATES[name]
    if args.retrain or not (run / "model.keras").is_file():
        train(TrainConfig(data=args.data, out=run, seed=seed, augment=augment, overwrite=True))
    details = read_metadata(run / "model.keras").details["training"]
    default = TrainConfig(data=args.data, out=run).to_dict()
    same = all(details["config"].get(key) == default[key] for key in default
               if key not in ("data", "out", "seed", "augment", "overwrite", "resume"))
    if not same or details["config"]["seed"] != seed or saved_augment(details) != augment.to_dict():
        raise SystemExit(f"{run} was not trained as the default compact model with {name} and seed {seed}; "
                         f"pass --retrain")
    return run


def score_run(name: str, seed: int, args) -> dict:
    """Validation (clean and stressed) at the run's threshold; test/ afterwards, as a secondary."""
    from edgecxr.train.evaluate import evaluate
    from research.shift_stress import shifted_summary, stress_rows

    cached = args.out / "runs" / f"{name}-seed{seed}.json"
    if cached.is_file() and not (args.rescore or args.retrain):
        return json.loads(cached.read_text())
    run = train_run(name, seed, args)
    rows = stress_rows(run)
    clean = next(row for row in rows if row["stress"] == "clean")
    test = evaluate(run, args.data, plots_dir=None)
    metrics = json.loads((run / "metrics.json").read_text())
    result = {"candidate": name, "seed": seed, "run": str(run), "augment": CANDIDATES[name].to_dict(),
              "threshold": test["threshold"], "train_seconds": metrics["train_seconds"],
              "epochs_run": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
              "clean": {k: clean[k] for k in ("roc_auc", "accuracy", "sensitivity", "specificity")},
              "stressed": shifted_summary(rows), "stress_rows": rows,
              "test": {k: test[k] for k in ("accuracy", "roc_auc", "sensitivity", "specificity")}}
    result["score"] = selection_score(result)
    write_json_atomic(cached, result)
    return result


def selection_score(result: dict) -> float:
    """Clean validation AUC, mean stressed AUC and mean stressed specificity, weighted alike."""
    return float(np.mean([result["clean"]["roc_auc"], result["stressed"]["roc_auc"],
                          result["stressed"]["specificity"]]))


def decide(results: list[dict], candidates=tuple(CANDIDATES), seeds=SEEDS) -> dict:
    """The rule of research/shift_augment_rule.md. Reads validation figures only, never `test`."""
    by = {(r["candidate"], r["seed"]): r for r in results}
    missing = [f"{c}-seed{s}" for c in candidates for s in seeds if (c, s) not in by]
    if missing:
        return {"complete": False, "missing": missing, "adopted": None}

    def per_setting(name):
        runs = [by[(name, s)] for s in seeds]
        scores = [r["score"] for r in runs]
        return {"score": float(np.mean(scores)), "spread": float(max(scores) - min(scores)),
                "clean_auc": float(np.mean([r["clean"]["roc_auc"] for r in runs])),
                "held_out_accuracy": float(np.mean([r["clean"]["accuracy"] for r in runs])),
                "stressed_sensitivity": float(np.mean([r["stressed"]["sensitivity"] for r in runs]))}

    base = per_setting(BASELINE)
    verdicts = {BASELINE: {**base, "margin": 0.0, "checks": {}, "passes": False}}
    for name in candidates:
        if name == BASELINE:
            continue
        own = per_setting(name)
        margin = own["score"] - base["score"]
        checks = {
            "beats baseline by more than the seed spread": margin > max(base["spread"], own["spread"]),
            f"clean validation AUC falls at most {MAX_CLEAN_AUC_DROP}":
                base["clean_auc"] - own["clean_auc"] <= MAX_CLEAN_AUC_DROP,
            f"held-out-patient accuracy falls at most {MAX_HELD_OUT_ACCURACY_DROP}":
                base["held_out_accuracy"] - own["held_out_accuracy"] <= MAX_HELD_OUT_ACCURACY_DROP,
            f"stressed sensitivity falls at most {MAX_STRESSED_SENSITIVITY_DROP}":
                base["stressed_sensitivity"] - own["stressed_sensitivity"] <= MAX_STRESSED_SENSITIVITY_DROP,
        }
        verdicts[name] = {**own, "margin": margin, "checks": checks, "passes": all(checks.values())}
    passing = [name for name, v in verdicts.items() if v["passes"]]
    adopted = max(passing, key=lambda name: verdicts[name]["margin"]) if passing else None
    return {"complete": True, "settings": verdicts, "adopted": adopted}


def markdown(results: list[dict], decision: dict, header: str) -> str:
    headers = ["setting", "seed", "epochs (best)", "train s", "threshold", "clean val AUC", "held-out acc",
               "stressed AUC", "stressed spec", "stressed sens", "score", "test/ acc", "test/ AUC", "test/ spec"]
    order = {name: i for i, name in enumerate(CANDIDATES)}
    table = [[r["candidate"], r["seed"], f"{r['epochs_run']} ({r['best_epoch']})", f"{r['train_seconds']:.0f}",
              f"{r['threshold']:.3f}", f"{r['clean']['roc_auc']:.4f}", f"{r['clean']['accuracy']:.4f}",
              f"{r['stressed']['roc_auc']:.4f}", f"{r['stressed']['specificity']:.4f}",
              f"{r['stressed']['sensitivity']:.4f}", f"{r['score']:.4f}", f"{r['test']['accuracy']:.3f}",
              f"{r['test']['roc_auc']:.3f}", f"{r['test']['specificity']:.3f}"]
             for r in sorted(results, key=lambda r: (order.get(r["candidate"], 99), r["seed"]))]
    lines = [header, "", *markdown_table(headers, table), ""]
    if not decision["complete"]:
        return "\n".join([*lines, f"Incomplete: no decision yet ({', '.join(decision['missing'])} missing)."]) + "\n"
    rows = []
    for name, v in decision["settings"].items():
        failed = [check for check, ok in v["checks"].items() if not ok]
        verdict = "baseline" if name == BASELINE else ("passes" if v["passes"] else "fails: " + "; ".join(failed))
        rows.append([name, f"{v['score']:.4f}", f"{v['spread']:.4f}", f"{v['margin']:+.4f}", f"{v['clean_auc']:.4f}",
                     f"{v['held_out_accuracy']:.4f}", f"{v['stressed_sensitivity']:.4f}", verdict])
    lines += ["Means over the seeds, and the rule (research/shift_augment_rule.md):", "",
              *markdown_table(["setting", "score", "seed spread", "margin", "clean val AUC", "held-out acc",
                               "stressed sens", "verdict"], rows), "",
              f"**Adopted: {decision['adopted']}**" if decision["adopted"] else
              "**Adopted: none** (the default stays as it is; the options stay available and off)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--runs", type=Path, default=Path("runs/shift_augment"))
    parser.add_argument("--out", type=Path, default=Path("research/results/shift_augment"))
    parser.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--rescore", action="store_true")
    args = parser.parse_args(argv)

    from edgecxr.benchmarks.machine import describe, machine_info
    from edgecxr.edge_runtime.data_location import resolve_data_dir

    args.data = resolve_data_dir(args.data)
    for seed in args.seeds:  # seed-major: a partial study still has every setting once
        for name in args.candidates:
            score_run(name, seed, args)
    results = [json.loads(path.read_text()) for path in sorted((args.out / "runs").glob("*.json"))]
    decision = decide(results)
    machine = machine_info()
    write_json_atomic(args.out / "shift_augment.json", {
        "decision": decision, "results": [{k: v for k, v in r.items() if k != "stress_rows"} for r in results],
        "candidates": {name: c.to_dict() for name, c in CANDIDATES.items()}, "seeds": list(SEEDS),
        "machine": machine})
    header = (f"Compact model per augmentation setting and seed; validation of each run clean and under the "
              f"shift stresses at its own threshold; test/ a secondary, not read by the rule "
              f"({machine['date']}, {describe(machine)}; a shared machine, train seconds are contaminated)")
    text = markdown(results, decision, header)
    write_text_atomic(args.out / "shift_augment.md", text)
    console.print(text, highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
