"""Site monitors calibrated by patient against the shipped one (research/monitor_rule.md, then
research/monitor_reference_rule.md).

    python -m research.monitor_study RUN [RUN ...] [--artifacts model_int8.tflite,model_int8.onnx]

For each artifact, references are made by convert's own rule (`artifact_reference`) from the
shipped halving of the validation patients and from `--halvings` others, and each reference's
patient null is drawn from its own calibration patients (convert/monitor_nulls.py). Batches are drawn by patient (whole patients until full, the last cut) from
each halving's held-out validation patients (false alarms) and from `test/` (detections; also by
image, as the earlier figures were), and judged by five monitors:

- KS17: the 17 KS tests, Bonferroni (the shipped monitor, `site_monitor.compare_with_reference`);
- KS17-patient: the same tests' smallest p-value against a null drawn by patient, as H17's;
- H17: the mean-shift statistic over all 17 numbers against its patient null;
- L8: the mean shift of the 8 input-layout components against every training-split film of the
  run, its null drawn by patient from the calibration half (research/monitor_reference_rule.md);
- H9+L16, H9+L64: H9+L8 with the layout test over all 16 basis components, or over the 64 grid
  cells themselves (research/monitor_layout_rule.md);
- L8t, H9+L8t: L8 and H9+L8 with the layout null drawn by whole training patients, each batch
  against the training films not in it (research/monitor_training_null_rule.md);
- H9+L8: L8 and the mean shift of the probability and 8 feature components (against the
  validation half, as H17), Bonferroni over the two: adopted by that rule, then replaced in the
  product by H9+L8t (its layout null from training patients); "KS17" is the shipped reference's 17
  KS tests, which older artifacts still run;
- H9xL8t: H9+L8t's two p-values combined by Fisher's method, and H9 alone
  (research/monitor_fisher_rule.md).

Images the input gate refuses are left out of a batch, as `predict` leaves them out. `test/`'s
labels are never read. Results: research/results/monitor/.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgecxr.benchmarks.bench_report import markdown_table
from edgecxr.benchmarks.machine import describe, machine_info
from edgecxr.benchmarks.measure.published import publish
from edgecxr.benchmarks.measure.site_safety import judge, observe, partition_reference
from edgecxr.convert.gate_reference import training_layouts, validation_halves
from edgecxr.convert.monitor_nulls import NULL_BATCH_SIZES, NULL_DRAWS, patient_batch, refitted_null, strictest_null
from edgecxr.convert.monitor_nulls import patient_groups as groups_of
from edgecxr.edge_runtime.data_location import resolve_data_dir
from edgecxr.edge_runtime.feature_reference import INPUT_LAYOUT, FeatureReference
from edgecxr.edge_runtime.folders import list_images
from edgecxr.edge_runtime.predictor import Predictor
from edgecxr.edge_runtime.run_folder import RunFolder
from edgecxr.edge_runtime.site_monitor import ALPHA, SHIFT, compare_with_reference
from edgecxr.edge_runtime.two_sample_ks import ks_2samp
from edgecxr.edge_runtime.mean_shift import PatientNull, ReferenceMoments

MONITORS = ("KS17", "KS17-patient", "H17", "L8", "H9+L8", "H9+L16", "H9+L64", "L8t", "H9+L8t", "H9", "H9xL8t")
# research/monitor_layout_rule.md: the layout test over all 16 basis components, or the 64 grid cells.
WIDE = {"L16": 16, "L64": None}
# Columns of `monitored_values`: the probability, the 8 feature components, the 8 layout components.
MODEL_COLUMNS, LAYOUT_COLUMNS = slice(0, 9), slice(9, 17)


def fisher_p_value(p_values) -> float:
    """Fisher's combination of two independent p-values: chi-square with 4 degrees of freedom at
    `-2 ln P` (P their product), whose survival function is `P (1 - ln P)` in closed form."""
    first, second = p_values
    product = first * second
    return float(product * (1.0 - np.log(product)))


def monitored_values(probabilities, projections) -> np.ndarray:
    """(n, 17): each image's probability, then its monitored components."""
    return np.column_stack([np.asarray(probabilities, dtype=np.float64), np.asarray(projections, dtype=np.float64)])


@dataclass
class Monitors:
    """One reference and what each monitor needs of it."""

    reference: FeatureReference
    moments: ReferenceMoments  # H17: the reference's mean and covariance
    null: PatientNull  # H17: T of held-out patient batches
    ks_critical: float  # KS17-patient: the smallest p-value that 5 % of patient batches fall below
    model_moments: ReferenceMoments  # H9: the probability and feature components of the reference
    model_null: PatientNull
    layout_moments: ReferenceMoments  # L8: the layout components of the training split
    layout_null: PatientNull
    # L16 and L64: the wider layout views' training moments and nulls, and how a grid becomes them.
    wide: dict = dataclasses.field(default_factory=dict)
    # L8t: L8's statistic against a null of whole training patients, each against the other training films.
    training_layout_null: PatientNull | None = None

    @classmethod
    def of(cls, reference: FeatureReference, calibration_paths: list[Path], seed: int, training_grid: np.ndarray,
           calibration_grid: np.ndarray, grid_paths: list[Path], training_paths: list[Path],
           wide_views: bool = True) -> "Monitors":
        """`training_grid` (n, 64): every training film's layout grid (`training_paths`, in order);
        `calibration_grid`: those of the calibration films the cheap checks let through (`grid_paths`),
        for the wider views' nulls."""
        values = monitored_values(reference.reference_probabilities, reference.monitored_reference())
        null = refitted_null(values, calibration_paths, seed)
        training_layout = wide_view(reference, "L8", training_grid)
        layout_moments = ReferenceMoments.of(training_layout)
        wide = {}
        for name in (WIDE if wide_views else ()):
            moments = ReferenceMoments.of(wide_view(reference, name, training_grid))
            wide[name] = (moments, fixed_reference_null(moments, wide_view(reference, name, calibration_grid),
                                                        grid_paths, seed))
        return cls(reference, ReferenceMoments.of(values), null, ks_patient_critical(reference, calibration_paths, null),
                   ReferenceMoments.of(values[:, MODEL_COLUMNS]),
                   refitted_null(values[:, MODEL_COLUMNS], calibration_paths, seed),
                   layout_moments, fixed_reference_null(layout_moments, values[:, LAYOUT_COLUMNS], calibration_paths, seed),
                   wide, refitted_null(training_layout, training_paths, seed))

    def verdicts(self, probabilities, projections, grid) -> dict[str, bool]:
        # The KS tests explicitly: a reference rebuilt by today's convert carries the mean-shift tests too.
        ks = compare_with_reference(dataclasses.replace(self.reference, mean_shift=None), projections, probabilities)
        values = monitored_values(probabilities, projections)
        t = self.moments.statistic(values)
        p_model = self.model_null.p_value(self.model_moments.statistic(values[:, MODEL_COLUMNS]))
        t_layout = self.layout_moments.statistic(values[:, LAYOUT_COLUMNS])
        p_layout = self.layout_null.p_value(t_layout)
        p_training = self.training_layout_null.p_value(t_layout)
        verdicts = {"KS17": ks.verdict == SHIFT,
                    "KS17-patient": min(test["p_value"] for test in ks.tests) < self.ks_critical,
                    "H17": self.null.p_value(t) < ALPHA,
                    "L8": p_layout < ALPHA,
                    "H9+L8": min(p_model, p_layout) < ALPHA / 2,
                    "L8t": p_training < ALPHA,
                    "H9+L8t": min(p_model, p_training) < ALPHA / 2,
                    "H9": p_model < ALPHA,
                    "H9xL8t": fisher_p_value((p_model, p_training)) < ALPHA}
        for name, (moments, null) in self.wide.items():
            p_wide = null.p_value(moments.statistic(wide_view(self.reference, name, grid)))
            verdicts[f"H9+{name}"] = min(p_model, p_wide) < ALPHA / 2
        return verdicts


def fixed_reference_null(moments: ReferenceMoments, values, paths, seed: int, sizes=NULL_BATCH_SIZES,
                         draws: int = NULL_DRAWS) -> PatientNull | None:
    """The null of `T` against a reference that stays as it is (films it never held), drawn by
    patient from `values` (the calibration half): the layout null shipped until
    research/monitor_training_null_rule.md replaced it. None when `values` hold fewer films than the
    smallest batch."""
    values = np.asarray(values, dtype=np.float64)
    groups = groups_of(paths)
    usable = [m for m in sizes if m <= len(values)]
    if not usable:
        return None
    return strictest_null(lambda size, rng: moments.statistic(values[patient_batch(groups, size, rng)[0]]),
                          usable, draws, seed)


def wide_view(reference: FeatureReference, name: str, grid) -> np.ndarray:
    """The layout numbers a layout test reads from (n, 64) grids: L8 and L16 the first 8 or 16
    components of the reference's basis, L64 the grid cells themselves."""
    from edgecxr.edge_runtime.feature_reference import INPUT_LAYOUT

    grid = np.asarray(grid, dtype=np.float64)
    if name == "L64":
        return grid
    return reference.spaces[INPUT_LAYOUT].basis.project(grid)[:, :{"L8": 8, "L16": 16}[name]]


def accepted_grid(observed, judged) -> np.ndarray:
    """(len(judged.accepted), 64): the layout grids of the images a reference accepted."""
    from edgecxr.edge_runtime.feature_reference import INPUT_LAYOUT

    row_of = {int(index): row for row, index in enumerate(observed.passed)}
    return observed.vectors[INPUT_LAYOUT][[row_of[int(i)] for i in judged.accepted]]


def ks_patient_critical(reference: FeatureReference, calibration_paths: list[Path], null: PatientNull) -> float:
    """The smallest-KS-p value below which a held-out patient batch of the reference is rare (5 %):
    the same draws as the mean-shift null (sizes, count, seed), the strictest size kept."""
    probabilities = reference.reference_probabilities
    projections = reference.monitored_reference()
    groups = groups_of(calibration_paths)
    rng = np.random.default_rng(null.seed)
    critical = np.inf
    for size in null.sizes:
        smallest = np.empty(len(null.statistics))
        for d in range(len(null.statistics)):
            batch, rest = patient_batch(groups, size, rng)
            smallest[d] = _smallest_against(probabilities[rest], projections[rest], probabilities[batch],
                                            projections[batch])
        critical = min(critical, float(np.quantile(smallest, ALPHA)))
    return critical


def _smallest_against(reference_probabilities, reference_projections, probabilities, projections) -> float:
    """The smallest p-value of the 17 KS tests of a batch against a reference sample (as the monitor's)."""
    expected = [np.asarray(reference_probabilities, dtype=np.float32)] + list(reference_projections.T)
    observed = [np.asarray(probabilities, dtype=np.float32)] + list(np.asarray(projections).T)
    return min(ks_2samp(o, e)[1] for o, e in zip(observed, expected))


def batch_rates(judged, grid: np.ndarray, monitors: Monitors, draw, draws: int) -> dict[str, float]:
    """Share of `draws` batches (positions from `draw()`) each monitor calls shifted; `grid` holds
    the accepted images' layout grids, in `judged.accepted`'s order."""
    accepted = {int(index): row for row, index in enumerate(judged.accepted)}
    hits = {}
    for _ in range(draws):
        rows = [accepted[int(i)] for i in draw() if int(i) in accepted]
        for name, shifted in monitors.verdicts(judged.accepted_probabilities[rows],
                                               judged.accepted_projections[rows], grid[rows]).items():
            hits[name] = hits.get(name, 0) + shifted
    return {name: hits[name] / draws for name in MONITORS if name in hits}


def study_artifact(path: Path, run: RunFolder, test_paths: list[Path], args) -> dict:
    predictor = Predictor.open(path)
    shipped = predictor.reference
    spec, backend = predictor.spec, predictor.backend
    validation = run.split("validation")
    validation_paths = [s.path for s in validation]
    position = {str(p): k for k, p in enumerate(validation_paths)}
    everything = observe(backend, spec, validation_paths, [p.name for p in validation_paths])
    test = observe(backend, spec, test_paths, [p.name for p in test_paths])
    test_groups = groups_of(test_paths)
    shipped_seed = shipped.calibration["seed"]
    seeds = [shipped_seed] + [s for s in range(args.halvings + 1) if s != shipped_seed][:args.halvings]
    rng = np.random.default_rng(args.seed)
    training = training_layouts(run)
    training_paths = [s.path for s in run.split("train")]
    validation_row = {int(index): row for row, index in enumerate(everything.passed)}
    rows = []
    for seed in seeds:
        reference, held_out = partition_reference(backend, spec, shipped, run, seed)
        calibration, _ = validation_halves(run, seed)
        # The wider views' nulls from the calibration films the cheap checks let through.
        kept = [s.path for s in calibration if position[str(s.path)] in validation_row]
        grid = everything.vectors[INPUT_LAYOUT][[validation_row[position[str(p)]] for p in kept]]
        monitors = Monitors.of(reference, [s.path for s in calibration], seed, training, grid, kept, training_paths,
                               wide_views=args.wide)
        judged_validation, judged_test = judge(everything, reference), judge(test, reference)
        grid_validation, grid_test = accepted_grid(everything, judged_validation), accepted_grid(test, judged_test)
        held_positions = np.array([position[str(s.path)] for s in held_out])
        held_groups = [held_positions[g] for g in groups_of([s.path for s in held_out])]
        row = {"seed": seed, "shipped": seed == shipped_seed, "n_reference": len(reference.reference_probabilities),
               "n_held_out": len(held_out), "null_batch_size": monitors.null.batch_size,
               "null_95th": float(np.quantile(monitors.null.statistics, 0.95)),
               "ks_patient_critical_p": monitors.ks_critical, "n_training_layout": len(training),
               "layout_null_95th": float(np.quantile(monitors.layout_null.statistics, 0.95)),
               "layout_null_batch_size": monitors.layout_null.batch_size,
               "training_layout_null_95th": float(np.quantile(monitors.training_layout_null.statistics, 0.95)),
               "training_layout_null_batch_size": monitors.training_layout_null.batch_size, "sizes": {}}
        for size in args.batch_sizes:
            row["sizes"][str(size)] = {
                "false_alarms_by_patient": batch_rates(judged_validation, grid_validation, monitors,
                                                       lambda: patient_batch(held_groups, size, rng)[0], args.draws),
                "detections_by_patient": batch_rates(judged_test, grid_test, monitors,
                                                     lambda: patient_batch(test_groups, size, rng)[0], args.draws),
                "detections_by_image": batch_rates(judged_test, grid_test, monitors,
                                                   lambda: rng.choice(len(test_paths), size, replace=False), args.draws),
            }
        rows.append(row)
        print(f"{path.parent.parent.name}/{path.name} halving {seed}: "
              f"{ {s: v for s, v in row['sizes'].items()} }", file=sys.stderr, flush=True)
    return {"artifact": str(path), "runtime": predictor.runtime, "arch": run.metadata.arch, "halvings": rows}


def summary(artifact: dict, size: int) -> dict:
    """Per monitor: the shipped halving's rates and the mean over the others."""
    shipped = next(r for r in artifact["halvings"] if r["shipped"])
    others = [r for r in artifact["halvings"] if not r["shipped"]]
    result = {}
    for monitor in MONITORS:
        if monitor not in shipped["sizes"][str(size)]["false_alarms_by_patient"]:
            continue  # not measured in this study (the wider views left out)
        cell = {}
        for key in ("false_alarms_by_patient", "detections_by_patient", "detections_by_image"):
            cell[key] = shipped["sizes"][str(size)][key][monitor]
            values = [r["sizes"][str(size)][key][monitor] for r in others]
            cell[key + "_other_mean"] = float(np.mean(values)) if values else None
            cell[key + "_other_range"] = [min(values), max(values)] if values else None
        result[monitor] = cell
    return result


def decide(artifacts: list[dict]) -> dict:
    """research/monitor_rule.md, at 100 images, over the int8 TFLite artifacts."""
    tflite = [a for a in artifacts if a["artifact"].endswith("model_int8.tflite")]
    checks = []
    for a in tflite:
        s = summary(a, 100)
        checks.append({"artifact": a["artifact"],
                       "false_alarms_shipped_le_5pct": s["H17"]["false_alarms_by_patient"] <= 0.05,
                       "false_alarms_other_mean_le_5pct": (s["H17"]["false_alarms_by_patient_other_mean"] or 0) <= 0.05,
                       "detects_more_than_KS17": s["H17"]["detections_by_patient"] > s["KS17"]["detections_by_patient"]})
    adopted = bool(checks) and all(all(v for k, v in c.items() if k != "artifact") for c in checks)
    return {"adopt_H17": adopted, "checks": checks}


def decide_reference(artifacts: list[dict]) -> dict:
    """research/monitor_reference_rule.md, at 100 images, over the compact int8 TFLite artifacts."""
    checks = []
    for a in artifacts:
        if not a["artifact"].endswith("model_int8.tflite") or a.get("arch") != "compact":
            continue
        every = summary(a, 100)
        candidate = every["H9+L8"]
        checks.append({"artifact": a["artifact"],
                       "false_alarms_shipped_le_5pct": candidate["false_alarms_by_patient"] <= 0.05,
                       "false_alarms_other_mean_le_5pct": (candidate["false_alarms_by_patient_other_mean"] or 0) <= 0.05,
                       "detects_more_than_KS17_patient_and_H17": candidate["detections_by_patient"] > max(
                           every["KS17-patient"]["detections_by_patient"], every["H17"]["detections_by_patient"])})
    # The rule names two compact artifacts (seeds 42 and 43): fewer cannot adopt.
    adopted = len(checks) >= 2 and all(all(v for k, v in c.items() if k != "artifact") for c in checks)
    return {"adopt_H9_L8": adopted, "checks": checks}


def decide_layout(artifacts: list[dict]) -> dict:
    """research/monitor_layout_rule.md, at 100 images, over the compact int8 TFLite artifacts (six)."""
    compact = [summary(a, 100) for a in artifacts
               if a["artifact"].endswith("model_int8.tflite") and a.get("arch") == "compact"]
    shipped = [s["H9+L8"]["detections_by_patient"] for s in compact]
    candidates = {}
    for name in ("H9+L16", "H9+L64"):
        detections = [s[name]["detections_by_patient"] for s in compact]
        alarms = all(s[name]["false_alarms_by_patient"] <= 0.05 and (s[name]["false_alarms_by_patient_other_mean"] or 0)
                     <= 0.05 for s in compact)
        better = bool(compact and np.mean(detections) >= np.mean(shipped) + 0.05 and min(detections) > min(shipped))
        candidates[name] = {"false_alarms_le_5pct_everywhere": alarms, "detects_5_points_more_and_a_higher_lowest": better,
                            "mean_detection": float(np.mean(detections)) if compact else None,
                            "lowest_detection": min(detections) if compact else None}
    passing = [n for n, c in candidates.items() if c["false_alarms_le_5pct_everywhere"]
               and c["detects_5_points_more_and_a_higher_lowest"]]
    # The rule names six compact runs: fewer cannot recommend.
    chosen = max(passing, key=lambda n: candidates[n]["mean_detection"]) if len(compact) >= 6 and passing else None
    return {"recommend": chosen, "n_compact_artifacts": len(compact),
            "H9+L8": {"mean_detection": float(np.mean(shipped)) if compact else None,
                      "lowest_detection": min(shipped) if compact else None},
            "candidates": candidates}


def _replacement(artifacts: list[dict], shipped_name: str, candidate_name: str) -> dict:
    """The last two monitor rules' test, at 100 images over the six compact int8 TFLite artifacts:
    the candidate's false alarms <= 5 % on every shipped halving and every other halvings' mean, its
    mean detection above the shipped monitor's and its lowest not below."""
    compact = [summary(a, 100) for a in artifacts
               if a["artifact"].endswith("model_int8.tflite") and a.get("arch") == "compact"]
    shipped = [s[shipped_name]["detections_by_patient"] for s in compact]
    candidate = [s[candidate_name]["detections_by_patient"] for s in compact]
    alarms = all(s[candidate_name]["false_alarms_by_patient"] <= 0.05
                 and (s[candidate_name]["false_alarms_by_patient_other_mean"] or 0) <= 0.05 for s in compact)
    better = bool(compact and np.mean(candidate) > np.mean(shipped) and min(candidate) >= min(shipped))
    # The rules name six compact runs: fewer cannot adopt.
    return {"adopt": len(compact) >= 6 and alarms and better, "n_compact_artifacts": len(compact),
            "false_alarms_le_5pct_everywhere": alarms, "detects_more_on_average_and_no_lower_lowest": better,
            shipped_name: {"mean_detection": float(np.mean(shipped)) if compact else None,
                           "lowest_detection": min(shipped) if compact else None},
            candidate_name: {"mean_detection": float(np.mean(candidate)) if compact else None,
                             "lowest_detection": min(candidate) if compact else None}}


def decide_training_null(artifacts: list[dict]) -> dict:
    """research/monitor_training_null_rule.md."""
    result = _replacement(artifacts, "H9+L8", "H9+L8t")
    return {"adopt_H9_L8t": result.pop("adopt"), **result}


def decide_fisher(artifacts: list[dict]) -> dict:
    """research/monitor_fisher_rule.md."""
    result = _replacement(artifacts, "H9+L8t", "H9xL8t")
    return {"adopt_H9xL8t": result.pop("adopt"), **result}


# rule -> (its decision's key in the result, the adopt flag, the shipped monitor, the candidate)
REPLACEMENT_RULES = {"monitor_training_null_rule": ("decision_training_null", "adopt_H9_L8t", "H9+L8", "H9+L8t"),
                     "monitor_fisher_rule": ("decision_fisher", "adopt_H9xL8t", "H9+L8t", "H9xL8t")}


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def markdown(result: dict) -> str:
    rule = result["settings"].get("rule", "monitor_rule")
    lines = ["# Site monitors calibrated by patient" + ("" if rule == "none" else f" (research/{rule}.md)"), "",
             f"Machine: {result['machine_text']}. Date: {result['date']}. Command: `{result['command']}`.",
             f"{result['settings']['draws']} seeded batches per cell; false alarms drawn by patient from the held-out "
             f"validation patients, detections from `test/` (labels never read). 'other' = mean (range) over the "
             f"references rebuilt from other halvings of the validation patients.", ""]
    for size in result["settings"]["batch_sizes"]:
        lines += [f"## Batches of {size}", ""]
        rows = []
        for a in result["artifacts"]:
            s = summary(a, size)
            for monitor, c in s.items():
                other = lambda key: ("-" if c[key + "_other_mean"] is None else
                                     f"{_pct(c[key + '_other_mean'])} ({_pct(c[key + '_other_range'][0])}-"
                                     f"{_pct(c[key + '_other_range'][1])})")
                rows.append([a["artifact"], monitor, _pct(c["false_alarms_by_patient"]),
                             other("false_alarms_by_patient"), _pct(c["detections_by_patient"]),
                             other("detections_by_patient"), _pct(c["detections_by_image"])])
        lines += markdown_table(["artifact", "monitor", "false alarms (shipped)", "false alarms (other)",
                                 "detections by patient (shipped)", "detections by patient (other)",
                                 "detections by image (shipped)"], rows, left=2)
        lines.append("")
    # Each rule decided once, on the runs it names: a result shows the decision of the rule it ran for.
    if rule == "none":
        lines += ["Reported only: no rule decides on these runs.", ""]
    elif rule == "monitor_layout_rule":
        d = result["decision_layout"]
        lines += [f"Decision of research/monitor_layout_rule.md (at 100 images, {d['n_compact_artifacts']} compact int8 "
                  f"TFLite): **{'recommend ' + d['recommend'] if d['recommend'] else 'H9+L8 stays'}**; H9+L8 mean "
                  f"{_pct(d['H9+L8']['mean_detection'])}, lowest {_pct(d['H9+L8']['lowest_detection'])}; "
                  + "; ".join(f"{n}: mean {_pct(c['mean_detection'])}, lowest {_pct(c['lowest_detection'])}, "
                              f"false alarms <= 5 % everywhere {'yes' if c['false_alarms_le_5pct_everywhere'] else 'no'}, "
                              f"5 points more and a higher lowest {'yes' if c['detects_5_points_more_and_a_higher_lowest'] else 'no'}"
                              for n, c in d["candidates"].items()), ""]
    elif rule in REPLACEMENT_RULES:
        key, adopt, shipped, candidate = REPLACEMENT_RULES[rule]
        d = result[key]
        lines += [f"Decision of research/{rule}.md (at 100 images, {d['n_compact_artifacts']} compact int8 TFLite): "
                  f"**{'adopt ' + candidate if d[adopt] else shipped + ' stays'}**; "
                  + "; ".join(f"{m} mean {_pct(d[m]['mean_detection'])}, lowest {_pct(d[m]['lowest_detection'])}"
                              for m in (shipped, candidate))
                  + f"; false alarms <= 5 % everywhere {'yes' if d['false_alarms_le_5pct_everywhere'] else 'no'}; "
                  f"more on average and no lower lowest "
                  f"{'yes' if d['detects_more_on_average_and_no_lower_lowest'] else 'no'}", ""]
    elif rule == "monitor_rule":
        d = result["decision"]
        lines += [f"Decision of research/monitor_rule.md (at 100 images, int8 TFLite): "
                  f"**{'adopt H17' if d['adopt_H17'] else 'keep KS17'}**; " + _checks(d["checks"]), ""]
    elif not result["decision_reference"]["checks"]:
        lines += ["research/monitor_reference_rule.md decides on compact int8 TFLite artifacts; none here, so "
                  "these figures are reported only.", ""]
    else:
        r = result["decision_reference"]
        lines += [f"Decision of research/monitor_reference_rule.md (at 100 images, compact int8 TFLite): "
                  f"**{'adopt H9+L8' if r['adopt_H9_L8'] else 'keep KS17'}**; " + _checks(r["checks"]), ""]
    return "\n".join(lines) + "\n"


def _checks(checks: list[dict]) -> str:
    return "; ".join(f"{c['artifact']}: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in c.items()
                                                     if k != "artifact") for c in checks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--artifacts", default="model_int8.tflite,model_int8.onnx")
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--batch-sizes", default="50,100")
    parser.add_argument("--halvings", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("research/results/monitor"))
    parser.add_argument("--name", default="monitor_study")
    parser.add_argument("--no-wide", dest="wide", action="store_false",
                        help="leave out the wider layout views (H9+L16, H9+L64), the slowest monitors")
    parser.add_argument("--rule", choices=("monitor_rule", "monitor_reference_rule", "monitor_layout_rule",
                                           "monitor_training_null_rule", "monitor_fisher_rule", "none"),
                        default="monitor_reference_rule",
                        help="whose decision the result reports (research/<rule>.md); none: figures only")
    args = parser.parse_args(argv)
    args.batch_sizes = [int(s) for s in args.batch_sizes.split(",")]
    test_paths = list_images(resolve_data_dir(args.data) / "test")
    artifacts = []
    for run_dir in args.runs:
        run = RunFolder.open(run_dir)
        for name in args.artifacts.split(","):
            artifacts.append(study_artifact(run.export_dir / name, run, test_paths, args))
    machine = machine_info()
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python -m research.monitor_study " + " ".join(argv or sys.argv[1:]),
              "machine": machine, "machine_text": describe(machine),
              "settings": {k: ([str(x) for x in v] if k == "runs" else str(v) if isinstance(v, Path) else v)
                           for k, v in vars(args).items()},
              "null": {"sizes": list(NULL_BATCH_SIZES), "draws": NULL_DRAWS}, "artifacts": artifacts}
    if args.rule == "monitor_rule":
        result["decision"] = decide(artifacts)
    elif args.rule == "monitor_reference_rule":
        result["decision_reference"] = decide_reference(artifacts)
    elif args.rule == "monitor_layout_rule":
        result["decision_layout"] = decide_layout(artifacts)
    elif args.rule == "monitor_training_null_rule":
        result["decision_training_null"] = decide_training_null(artifacts)
    elif args.rule == "monitor_fisher_rule":
        result["decision_fisher"] = decide_fisher(artifacts)
    return publish(args.out, args.name, result, markdown(result))


if __name__ == "__main__":
    sys.exit(main())
