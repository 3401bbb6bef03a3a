"""Lite0 as the student of the compact+Lite0 ensemble, judged by research/lite0_student_rule.md.

    python -m research.lite0_student runs/lite0 runs/lite0_student runs/distilled \
        --time-v research/results/lite0_student/train_time_v.txt

The runs are the baseline B, the candidate L and the compact student S2, in that order, each with
`export/model_int8.tflite`. Their validation, stress, `test/`, size and latency figures come from
the ensemble study's measurements (`research.ensemble_study.study`: every member on the same
films); the rule reads only validation, the stresses, verification, size and the training cost.
`test/` is reported beside the decision, never read by it.

The candidate failed the rule (rule 1, validation AUC 0.9975 against 0.9977), so `--teacher` for a
backbone was removed from `train` again; it last lived at commit 77aec05 (`git show
77aec05:train/trainer.py`), which trains `runs/lite0_student` with the rule's command.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from edgecxr.benchmarks.bench_report import markdown_table
from edgecxr.edge_runtime.console import console

AUC_MARGIN = 0.001  # rule 1
ACCURACY_MARGIN = 0.010  # rule 1
MAX_TRAIN_SECONDS = 30 * 60  # rule 4: the Lite0 training target
MAX_TRAIN_GB = 6.0  # rule 4
MAX_INT8_MB = 8.0  # rule 4
RECORD = ("roc_auc", "accuracy", "sensitivity", "specificity")


def time_v(text: str) -> tuple[float, float]:
    """Wall seconds and peak RSS in GB from `/usr/bin/time -v` output."""
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if not wall or not rss:
        raise ValueError("not /usr/bin/time -v output")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in wall.groups())
    return hours * 3600 + minutes * 60 + seconds, int(rss.group(1)) * 1024 / 1e9


def decide(validation: dict, stress_means: dict, verified: bool, size_mb: float, train_seconds: float,
           train_gb: float, baseline: str, candidate: str, compact_student: str) -> dict:
    """The rule as written: `validation[name]` holds int8 validation metrics at the stored threshold,
    `stress_means[name]` the mean AUC over the ten stresses (Keras)."""
    b, c = validation[baseline], validation[candidate]
    checks = {
        "1. int8 validation AUC and accuracy": c["roc_auc"] >= b["roc_auc"] - AUC_MARGIN
        and c["accuracy"] >= b["accuracy"] - ACCURACY_MARGIN,
        "2. stress mean above B's and S2's": stress_means[candidate] > stress_means[baseline]
        and stress_means[candidate] > stress_means[compact_student],
        "3. int8 verifies": bool(verified),
        "4. <= 30 min, <= 6 GB to train; int8 <= 8 MB": train_seconds <= MAX_TRAIN_SECONDS
        and train_gb <= MAX_TRAIN_GB and size_mb <= MAX_INT8_MB,
    }
    return {"checks": checks, "qualifies": all(checks.values())}


def verified(run: Path, artifact: str) -> bool:
    report = json.loads((run / "export" / "verify.json").read_text())
    return report["artifacts"][artifact]["status"] == "ok"


def markdown(result: dict) -> str:
    names = list(result["members"])
    headers = ["run", "val int8 AUC", "val int8 acc", "stress mean (Keras)", "int8 MB", "p50 ms (1 thread)",
               *(f"test/ int8 {k}" for k in RECORD)]
    rows = [[name, f"{result['validation']['int8'][name]['roc_auc']:.4f}",
             f"{result['validation']['int8'][name]['accuracy']:.4f}", f"{result['stress_means'][name]:.4f}",
             f"{result['sizes_mb'][name]:.2f}", f"{result['latency_ms_p50_1thread'][name]:.2f}",
             *(f"{result['test']['int8'][name][k]:.4f}" for k in RECORD)] for name in names]
    decision = result["lite0_student_decision"]
    lines = [*markdown_table(headers, rows), "", "## Decision (research/lite0_student_rule.md)", ""]
    lines += [f"- {check}: {'pass' if ok else 'FAIL'}" for check, ok in decision["checks"].items()]
    lines += [f"- **qualifies: {decision['qualifies']}**", "",
              f"Training (candidate): {result['train_seconds']:.0f} s wall, peak RSS {result['train_gb']:.2f} GB.",
              "", "test/ is the record only; the ensemble rows of `research.ensemble_study` are not part of this rule."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs=3, metavar="RUN", help="baseline, candidate, compact student")
    parser.add_argument("--time-v", type=Path, required=True, help="/usr/bin/time -v output of the candidate's train")
    parser.add_argument("--artifact", default="model_int8.tflite")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("research/results/lite0_student"))
    args = parser.parse_args(argv)

    from edgecxr.benchmarks.machine import describe, machine_info
    from edgecxr.edge_runtime.atomic import write_json_atomic, write_text_atomic

    from .ensemble_study import study

    machine = machine_info()
    train_seconds, train_gb = time_v(args.time_v.read_text())
    result = study(list(args.runs), args.artifact, args.data)
    baseline, candidate, compact_student = (run.name for run in args.runs)
    result.pop("decision")  # the ensemble rule's, not this one's
    result["lite0_student_decision"] = decide(
        result["validation"]["int8"], result["stress_means"], verified(args.runs[1], args.artifact),
        result["sizes_mb"][candidate], train_seconds, train_gb, baseline, candidate, compact_student)
    result.update(train_seconds=train_seconds, train_gb=train_gb, machine=machine,
                  command="python -m research.lite0_student " + " ".join(argv or sys.argv[1:]))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "lite0_student.json", result)  # before the page: a page error loses no run
    write_text_atomic(args.out / "lite0_student.md",
                      f"Lite0 student against {baseline} and {compact_student} ({machine['date']}, {describe(machine)}).\n"
                      f"Command: `{result['command']}`.\n\n" + markdown(result))
    console.print(f"qualifies: {result['lite0_student_decision']['qualifies']} -> {args.out}/lite0_student.md",
                  highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
