"""Peak memory and wall time of each published command, one subprocess per step.

    python -m edgecxr.benchmarks.measure.memory compact            # train -> evaluate -> convert -> bench
    python -m edgecxr.benchmarks.measure.memory lite0 --steps train,convert,evaluate-int8

Each step runs as its own process, as a user runs it; its peak resident memory is the `ru_maxrss`
that `wait4` reports for it, which covers the step and the processes it waited for (bench's
workers), the largest of them, not their sum. Results land in benchmarks/results/memory/ with
the machine and date. The goals are what a 16 GB laptop or an 8 GB cloud worker can run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edgecxr.edge_runtime.data_location import resolve_data_dir
from edgecxr.edge_runtime.run_folder import EXPORT_DIR
from edgecxr.edge_runtime.python_command import python_module

from ..machine import describe, machine_info
from ..bench_report import markdown_table
from .published import publish

GB = 1e9
LITE0_TRAIN = ("--arch efficientnet_lite0 --image-size 224 --strategy fine-tune --fine-tune-from block12 "
               "--head-epochs 5 --epochs 10 --augment-passes 3")


@dataclass(frozen=True)
class Step:
    name: str
    args: str  # edgecxr arguments; {run} and {data} are filled in
    goal_gb: float | None = None


PRESETS = {
    "compact": [
        Step("train", "train --data {data} --out {run} --overwrite", 2.0),
        Step("evaluate", "evaluate {run} --data {data}"),
        Step("convert", "convert {run} --quantize all", 4.0),
        Step("bench", "bench {run} --data {data} --threads 1,2 --batch-sizes 1,8"),
    ],
    "lite0": [
        Step("train", f"train --data {{data}} --out {{run}} --overwrite {LITE0_TRAIN}", 6.0),
        Step("convert", "convert {run} --quantize all --calibration-size 1000", 4.0),
        Step("evaluate-int8", f"evaluate {{run}}/{EXPORT_DIR}/model_int8.tflite --data {{data}} "
                              f"--json {{run}}/test_metrics_int8.json"),
        Step("evaluate", "evaluate {run} --data {data} --json {run}/test_metrics_keras.json"),
        Step("bench", "bench {run} --data {data} --threads 1,2 --batch-sizes 1,8"),
    ],
}


def run_step(command: list[str]) -> tuple[int, float, float]:
    """(exit code, wall seconds, peak resident bytes) of one command run to its end."""
    started = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    peak = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    return process.returncode, time.perf_counter() - started, float(peak)


def markdown(result: dict) -> str:
    rows = []
    for row in result["steps"]:
        met = "-" if row["goal_gb"] is None else ("yes" if row["met"] else "**no**")
        if row["exit_code"] != 0:
            met = f"**failed (exit {row['exit_code']})**"
        rows.append([row["name"], f"`edgecxr {row['args']}`", f"{row['seconds'] / 60:.1f} min",
                     f"{row['peak_gb']:.2f} GB", f"≤ {row['goal_gb']:g} GB" if row["goal_gb"] else "-", met])
    lines = [f"# Peak memory of the {result['preset']} commands", "",
             f"Machine: {result['machine_text']}. Date: {result['date']}. Command: `{result['command']}`.", "",
             *markdown_table(["step", "command", "wall", "peak RSS", "goal", "met?"], rows, left=2)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("--data", type=Path, default=None, help="Kaggle-layout folder (default as edgecxr train)")
    parser.add_argument("--run", type=Path, default=None, help="run folder (default runs/memory-PRESET)")
    parser.add_argument("--steps", default=None, help="comma list of step names (default: all)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/memory"))
    args = parser.parse_args(argv)

    steps = PRESETS[args.preset]
    if args.steps:
        wanted = args.steps.split(",")
        unknown = sorted(set(wanted) - {s.name for s in steps})
        if unknown:
            parser.error(f"unknown step(s) {', '.join(unknown)}; {args.preset} has {', '.join(s.name for s in steps)}")
        steps = [s for s in steps if s.name in wanted]
    data = resolve_data_dir(args.data)
    run = args.run or Path("runs") / f"memory-{args.preset}"
    edgecxr = python_module("edgecxr.cli")
    rows = []
    for step in steps:
        filled = step.args.format(run=run, data=data)
        print(f"+ edgecxr {filled}", file=sys.stderr, flush=True)
        code, seconds, peak = run_step(edgecxr + shlex.split(filled))
        rows.append({"name": step.name, "args": filled, "exit_code": code, "seconds": round(seconds, 1),
                     "peak_gb": round(peak / GB, 3), "goal_gb": step.goal_gb,
                     "met": None if step.goal_gb is None else bool(code == 0 and peak / GB <= step.goal_gb)})
        print(f"  {step.name}: exit {code}, {seconds / 60:.1f} min, peak {peak / GB:.2f} GB", file=sys.stderr)
        if code != 0:
            break
    machine = machine_info()
    result = {"preset": args.preset, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python -m edgecxr.benchmarks.measure.memory " + " ".join(argv or sys.argv[1:]),
              "machine": machine, "machine_text": describe(machine), "steps": rows}
    name = f"memory_{args.preset}" + (f"_{'_'.join(s.name for s in steps)}" if args.steps else "")
    publish(args.out, name, result, markdown(result))
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
