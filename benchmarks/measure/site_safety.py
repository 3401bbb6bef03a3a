"""Input gate and site monitor on a run's artifacts, in the TensorFlow-free runtime.

    python -m edgecxr.benchmarks.measure.site_safety RUN [--artifacts model_int8.tflite,model_int8.onnx]

Gate: the share refused of the run's held-out validation X-rays (the half of the validation
patients `convert` did not calibrate on), of test/'s X-rays (images only; a new site), and of a
catalogue of non-X-rays (benchmarks/measure/non_xrays.py). Goals: at most 1 % of validation X-rays and at
least 99 % of the catalogue refused.

Monitor: seeded batches of 50 and 100 images drawn from the held-out validation X-rays (the
training population: a "shift" there is a false alarm) and from test/ (another acquisition: a
"shift" there is a detection), each judged as `predict` judges a folder (refused images left out);
drawn by patient (whole patients until the batch is full, as issue 32 asks) and by image.
Goals at 100: at most 5 % false alarms, at least 90 % detections. Because the false-alarm rate
depends on which validation patients formed the reference, the monitor is also measured with
references rebuilt, in the same runtime and by the same rule, from other halvings of the
validation patients (--partitions).

test/'s labels are never read. Results land in benchmarks/results/site_safety/ with the command,
machine and date.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgecxr.convert.calibration import ImageSet
from edgecxr.convert.gate_reference import GateImages, artifact_reference, paths_digest, validation_halves
from edgecxr.convert.monitor_nulls import LayoutTest, patient_batch, patient_groups
from edgecxr.edge_runtime.data_location import resolve_data_dir
from edgecxr.edge_runtime.errors import EdgecxrError, ImageError
from edgecxr.edge_runtime.feature_reference import FEATURES, INPUT_LAYOUT, FeatureReference, input_layout
from edgecxr.edge_runtime.folders import list_images
from edgecxr.edge_runtime.images import open_image
from edgecxr.edge_runtime.gate import check_image
from edgecxr.edge_runtime.gate import learned_check
from edgecxr.edge_runtime.predictor import Predictor
from edgecxr.edge_runtime.preprocessing import preprocess
from edgecxr.edge_runtime.run_folder import RunFolder
from edgecxr.edge_runtime.site_monitor import SHIFT, compare_with_reference

from ..machine import describe, machine_info
from .non_xrays import catalogue
from .published import publish
from ..bench_report import markdown_table

GOALS = {"validation_refused_max": 0.01, "catalogue_refused_min": 0.99, "false_alarm_max_at_100": 0.05,
         "detection_min_at_100": 0.90}
INFERENCE_BATCH = 32


@dataclass
class Observed:
    """One image set through one artifact: what the cheap checks said and, for the images they let
    through, the probability and both views' vectors (the learned check and monitor need no more)."""

    names: list[str]
    cheap_reasons: list[str | None]
    passed: np.ndarray  # indices of the images the cheap checks let through
    probabilities: np.ndarray  # (len(passed),)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # view -> (len(passed), D)
    errors: list[str] = field(default_factory=list)


def observe(backend, spec, sources: list, names: list[str]) -> Observed:
    cheap, passed, probabilities, features, layouts, errors = [], [], [], [], [], []
    pending, pending_index = [], []

    def flush():
        if pending:
            batch = np.stack(pending)
            p, f = backend.predict(batch)
            probabilities.append(p)
            features.append(f)
            layouts.append(input_layout(batch))
            passed.extend(pending_index)
            pending.clear()
            pending_index.clear()

    for index, source in enumerate(sources):
        try:
            image = open_image(source)
        except ImageError as exc:
            errors.append(f"{names[index]}: {exc}")
            cheap.append(f"unreadable: {exc}")
            continue
        reason = check_image(image)
        cheap.append(reason)
        if reason is None:
            pending.append(preprocess(image, spec))
            pending_index.append(index)
            if len(pending) == INFERENCE_BATCH:
                flush()
    flush()
    if not passed:
        return Observed(names, cheap, np.zeros(0, int), np.zeros(0), {}, errors)
    return Observed(names, cheap, np.asarray(passed), np.concatenate(probabilities),
                    {FEATURES: np.concatenate(features), INPUT_LAYOUT: np.concatenate(layouts)}, errors)


@dataclass
class Judged:
    """An observed set under one reference: per image refused or not (and by which check), and the
    monitor's inputs for the accepted ones."""

    refused: np.ndarray  # (N,) bool
    check: list[str]  # per image: "cheap", "learned" or "" (accepted)
    accepted_probabilities: np.ndarray  # indexed like `accepted`
    accepted_projections: np.ndarray
    accepted: np.ndarray  # image indices


def judge(observed: Observed, reference: FeatureReference) -> Judged:
    refused = np.array([reason is not None for reason in observed.cheap_reasons])
    check = ["cheap" if r else "" for r in refused]
    if len(observed.passed) == 0:
        return Judged(refused, check, np.zeros(0), np.zeros((0, 0)), np.zeros(0, int))
    reasons, _, projections = learned_check(reference, observed.vectors)
    learned = np.array([reason is not None for reason in reasons])
    for index in observed.passed[learned]:
        refused[index], check[index] = True, "learned"
    keep = ~learned
    return Judged(refused, check, observed.probabilities[keep], projections[keep], observed.passed[keep])


def shift_rate(judged: Judged, reference: FeatureReference, positions: np.ndarray, size: int, draws: int,
               rng: np.random.Generator, paths: list | None = None) -> float:
    """Share of `draws` batches of `size` images (drawn from `positions`) the monitor calls shifted.
    Drawn by image, or, given the images' `paths`, by patient: whole patients (read from the file
    names) until the batch is full, the last one cut, as a clinic's day holds whole patients."""
    accepted = {int(index): row for row, index in enumerate(judged.accepted)}
    groups = None if paths is None else [positions[g] for g in patient_groups([paths[int(i)] for i in positions])]
    hits = 0
    for _ in range(draws):
        batch = rng.choice(positions, size=size, replace=False) if groups is None else patient_batch(groups, size, rng)[0]
        rows = [accepted[int(i)] for i in batch if int(i) in accepted]
        result = compare_with_reference(reference, judged.accepted_projections[rows],
                                        judged.accepted_probabilities[rows])
        hits += result.verdict == SHIFT
    return hits / draws


def refusal_summary(judged: Judged) -> dict:
    n = len(judged.refused)
    counts = Counter(judged.check)
    return {"n_images": n, "refused": int(judged.refused.sum()), "rate": float(judged.refused.mean()) if n else None,
            "by_cheap_checks": counts["cheap"], "by_learned_check": counts["learned"]}


def check_against_predictor(path: Path, sources: list, judged: Judged) -> None:
    """The cached-array decisions must be exactly `edgecxr predict`'s: run the Predictor itself."""
    predictor = Predictor.open(path)
    refused = np.array([p.refused for p in predictor.predict_many(sources, batch_size=INFERENCE_BATCH)])
    if not np.array_equal(refused, judged.refused):
        raise EdgecxrError(f"{path.name}: the benchmark's decisions differ from the Predictor's on "
                           f"{int(np.sum(refused != judged.refused))} image(s)")


def partition_reference(backend, spec, shipped: FeatureReference, run: RunFolder, seed: int) -> tuple[FeatureReference, list]:
    """A reference made by convert's rule from another halving of the validation patients (the
    shipped bases, fitted on training images, are kept), and that halving's held-out images."""
    calibration, held_out = validation_halves(run, seed)
    inputs = np.stack([preprocess(s.path, spec) for s in calibration]).astype(np.float32)
    # The layout test (training films' reference and null) does not depend on the halving: the shipped one serves.
    layout = None
    if shipped.mean_shift is not None:
        layout = LayoutTest(shipped.mean_shift.layout_reference, shipped.mean_shift.layout_null,
                            shipped.mean_shift.description.get("layout_null", "as shipped"))
    images = GateImages(fit=None, calibration=ImageSet(inputs, np.array([s.label for s in calibration]),
                                                       [str(s.path) for s in calibration], "validation"),
                        description={"seed": seed}, layout_test=layout)
    bases = {name: space.basis for name, space in shipped.spaces.items()}
    return artifact_reference(backend.predict, bases, images), held_out


def benchmark_artifact(path: Path, run: RunFolder, test_paths: list[Path], args) -> dict:
    predictor = Predictor.open(path)
    reference = predictor.reference
    if reference is None or not reference.learned_check_available:
        raise EdgecxrError(f"{path.name}: its learned check is {predictor.learned_check}; re-export it")
    spec, backend = predictor.spec, predictor.backend
    seed = reference.calibration["seed"]
    _, held_out = validation_halves(run, seed)
    expected = reference.calibration["held_out_validation_images"]["paths_sha256"]
    if paths_digest(s.path for s in held_out) != expected:
        raise EdgecxrError(f"{path.name}: the run's validation split is not the one its reference was made from")
    held_paths = [s.path for s in held_out]
    items, notes = catalogue(held_paths, args.transformed, args.seed)
    print(f"{path.name}: {len(held_paths)} held-out validation, {len(test_paths)} test/, {len(items)} catalogue images",
          file=sys.stderr, flush=True)

    sets = {
        "validation": observe(backend, spec, held_paths, [p.name for p in held_paths]),
        "test": observe(backend, spec, test_paths, [p.name for p in test_paths]),
        "catalogue": observe(backend, spec, [i.data for i in items], [f"{i.category}: {i.name}" for i in items]),
    }
    judged = {name: judge(observed, reference) for name, observed in sets.items()}
    check_against_predictor(path, [i.data for i in items], judged["catalogue"])
    check_against_predictor(path, held_paths, judged["validation"])

    categories = sorted({i.category for i in items}, key=[i.category for i in items].index)
    by_category = {}
    for category in categories:
        members = [k for k, item in enumerate(items) if item.category == category]
        refused = judged["catalogue"].refused[members]
        by_category[category] = {"n_images": len(members), "refused": int(refused.sum()),
                                 "rate": float(refused.mean()),
                                 "accepted": [items[k].name for k in members if not judged["catalogue"].refused[k]]}
    rng = np.random.default_rng(args.seed)
    monitor = {}
    for size in args.batch_sizes:
        monitor[str(size)] = {
            "false_alarm_rate": shift_rate(judged["validation"], reference, np.arange(len(held_paths)), size,
                                           args.draws, rng),
            "detection_rate": shift_rate(judged["test"], reference, np.arange(len(test_paths)), size, args.draws, rng),
            "false_alarm_rate_by_patient": shift_rate(judged["validation"], reference, np.arange(len(held_paths)),
                                                      size, args.draws, rng, held_paths),
            "detection_rate_by_patient": shift_rate(judged["test"], reference, np.arange(len(test_paths)), size,
                                                    args.draws, rng, test_paths),
        }
    whole = {name: compare_with_reference(reference, judged[name].accepted_projections,
                                          judged[name].accepted_probabilities).to_dict()
             for name in ("validation", "test")}
    partitions = partition_figures(backend, spec, reference, run, sets, judged, test_paths, args, rng) \
        if args.partitions else []
    return {
        "artifact": path.name, "runtime": predictor.runtime, "learned_check": predictor.learned_check,
        "reference": {"seed": seed, "n_calibration_images": reference.calibration["n_calibration_images"],
                      "n_held_out_images": len(held_paths), "metadata_numbers": reference.n_numbers()},
        "gate": {name: refusal_summary(judged[name]) for name in ("validation", "test", "catalogue")},
        "catalogue": by_category, "catalogue_notes": notes,
        "refused_validation_images": [sets["validation"].names[k] for k in np.flatnonzero(judged["validation"].refused)],
        "monitor": monitor, "monitor_whole_sets": {k: {key: v[key] for key in ("verdict", "n_images", "p_value",
                                                                            "strongest")} for k, v in whole.items()},
        "monitor_other_partitions": partitions,
    }


def partition_figures(backend, spec, shipped, run, sets, judged, test_paths, args, rng) -> list[dict]:
    """The monitor with references from other halvings of the validation patients (seeds 0, 1, ...)."""
    all_validation = run.split("validation")
    validation_paths = [s.path for s in all_validation]
    everything = observe(backend, spec, validation_paths, [p.name for p in validation_paths])
    position = {str(s.path): k for k, s in enumerate(all_validation)}
    rows = []
    for seed in range(args.partitions):
        if seed == shipped.calibration["seed"]:
            continue
        reference, held_out = partition_reference(backend, spec, shipped, run, seed)
        validation = judge(everything, reference)
        test = judge(sets["test"], reference)
        held_positions = np.array([position[str(s.path)] for s in held_out])
        row = {"seed": seed, "validation_refused_rate": float(validation.refused[held_positions].mean())}
        for size in args.batch_sizes:
            row[str(size)] = {
                "false_alarm_rate": shift_rate(validation, reference, held_positions, size, args.draws, rng),
                "detection_rate": shift_rate(test, reference, np.arange(len(test_paths)), size, args.draws, rng),
                "false_alarm_rate_by_patient": shift_rate(validation, reference, held_positions, size, args.draws, rng,
                                                          validation_paths),
                "detection_rate_by_patient": shift_rate(test, reference, np.arange(len(test_paths)), size, args.draws,
                                                        rng, test_paths)}
        rows.append(row)
        print(f"  partition seed {seed}: {row}", file=sys.stderr, flush=True)
    return rows


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def markdown(result: dict) -> str:
    sizes = result["settings"]["batch_sizes"]
    model = result["model"]
    lines = [f"# Input gate and site monitor: {result['run']}", "",
             f"Model: {model['arch']} (model.keras sha256 {model['sha256'][:12]}), trained on {model['n_train']} "
             f"images, {model['epochs_run']} epochs; validation {model['n_val']} images ({model['validation_source']}); "
             f"threshold {model['threshold']:.4f}.",
             f"Machine: {result['machine_text']}. Date: {result['date']}. Command: `{result['command']}`.",
             f"TensorFlow imported during the run: {'yes' if result['tensorflow_imported'] else 'no'}.", "",
             "## Gate: share of images refused", ""]
    rows = []
    for a in result["artifacts"]:
        g = a["gate"]
        rows.append([a["artifact"], f"{_pct(g['validation']['rate'])} ({g['validation']['refused']}/{g['validation']['n_images']})",
                     f"{_pct(g['catalogue']['rate'])} ({g['catalogue']['refused']}/{g['catalogue']['n_images']})",
                     f"{_pct(g['test']['rate'])} ({g['test']['refused']}/{g['test']['n_images']})"])
    lines += markdown_table(["artifact", "held-out validation X-rays (goal ≤ 1 %)", "non-X-ray catalogue (goal ≥ 99 %)",
                             "test/ X-rays (new site)"], rows)
    lines += ["", "Catalogue by category (refused / images; cheap checks + learned check):", ""]
    categories = list(result["artifacts"][0]["catalogue"])
    rows = [[c] + [f"{a['catalogue'][c]['refused']}/{a['catalogue'][c]['n_images']}" for a in result["artifacts"]]
            for c in categories]
    lines += markdown_table(["category"] + [a["artifact"] for a in result["artifacts"]], rows)
    for a in result["artifacts"]:
        accepted = [f"{c}: {', '.join(v['accepted'])}" for c, v in a["catalogue"].items() if v["accepted"]]
        lines += ["", f"{a['artifact']} let through: " + ("; ".join(accepted) if accepted else "nothing") + "."]
    notes = result["artifacts"][0]["catalogue_notes"]
    if notes:
        lines += ["", "Left out: " + "; ".join(notes) + "."]
    lines += ["", f"## Monitor: share of batches called shifted ({result['settings']['draws']} seeded draws each)", "",
              "With the reference shipped in the artifact:", ""]
    headers = ["artifact"] + [x for s in sizes for x in (f"false alarms, {s} validation", f"detections, {s} test/")]
    for title, suffix in (("Drawn by patient (whole patients until the batch is full; the issue's protocol):",
                           "_by_patient"), ("Drawn by image:", "")):
        if not all(f"false_alarm_rate{suffix}" in a["monitor"][str(sizes[0])] for a in result["artifacts"]):
            continue  # a result written before patient draws were measured
        rows = [[a["artifact"]] + [x for s in sizes for x in (_pct(a["monitor"][str(s)][f"false_alarm_rate{suffix}"]),
                                                              _pct(a["monitor"][str(s)][f"detection_rate{suffix}"]))]
                for a in result["artifacts"]]
        lines += [title, ""] + markdown_table(headers, rows) + [""]
    lines.pop()
    lines += ["", "Whole sets against the shipped reference: " + "; ".join(
        f"{a['artifact']} validation {a['monitor_whole_sets']['validation']['verdict']} "
        f"(p {a['monitor_whole_sets']['validation']['p_value']:.2g}), test/ {a['monitor_whole_sets']['test']['verdict']} "
        f"(p {a['monitor_whole_sets']['test']['p_value']:.2g})" for a in result["artifacts"]) + "."]
    if any(a["monitor_other_partitions"] for a in result["artifacts"]):
        lines += ["", "With references rebuilt by the same rule from other halvings of the validation patients "
                      "(mean, and range over halvings):", ""]
        rows = []
        for a in result["artifacts"]:
            parts = a["monitor_other_partitions"]
            for draw, suffix in (("by patient", "_by_patient"), ("by image", "")):
                if not all(f"false_alarm_rate{suffix}" in p[str(sizes[0])] for p in parts):
                    continue
                cells = [a["artifact"], draw, str(len(parts))]
                for s in sizes:
                    for key in (f"false_alarm_rate{suffix}", f"detection_rate{suffix}"):
                        values = [p[str(s)][key] for p in parts]
                        cells.append(f"{_pct(np.mean(values))} ({_pct(min(values))}-{_pct(max(values))})")
                rows.append(cells)
        lines += markdown_table(["artifact", "drawn", "halvings"] + headers[1:], rows, left=3)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, default=None, help="Kaggle-layout folder whose test/ is the new site")
    parser.add_argument("--artifacts", default="model_int8.tflite,model_int8.onnx")
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--batch-sizes", default="50,100")
    parser.add_argument("--transformed", type=int, default=100, help="inverted and rotated X-rays in the catalogue")
    parser.add_argument("--partitions", type=int, default=6, help="halvings of the validation patients (seeds "
                        "0..N-1, the shipped one skipped) to rebuild references from; 0 to skip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/site_safety"))
    args = parser.parse_args(argv)
    args.batch_sizes = [int(s) for s in args.batch_sizes.split(",")]
    if args.draws < 1:
        parser.error("--draws must be at least 1")

    run = RunFolder.open(args.run)
    test_paths = list_images(resolve_data_dir(args.data) / "test")
    if min(args.batch_sizes) < 1 or max(args.batch_sizes) > len(test_paths):
        parser.error(f"batch sizes must be between 1 and the {len(test_paths)} test/ images")
    machine = machine_info()
    results = [benchmark_artifact(run.export_dir / name, run, test_paths, args) for name in args.artifacts.split(",")]
    training = run.metadata.details.get("training", {})
    model = {"arch": run.metadata.arch, "sha256": run.metadata.sha256, "threshold": run.metadata.threshold,
             **{key: training.get(key) for key in ("n_train", "n_val", "epochs_run", "validation_source")}}
    result = {"run": str(args.run), "model": model, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python -m edgecxr.benchmarks.measure.site_safety " + " ".join(argv or sys.argv[1:]),
              "machine": machine, "machine_text": describe(machine), "goals": GOALS,
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "tensorflow_imported": "tensorflow" in sys.modules, "artifacts": results}
    name = Path(args.run).name
    return publish(args.out, name, result, markdown(result))


if __name__ == "__main__":
    sys.exit(main())
