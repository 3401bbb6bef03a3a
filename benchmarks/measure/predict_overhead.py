"""`edgecxr predict`'s CPU time against the bare loop a user would write (bare_loop.py), side by side.

Both run as whole commands, start-up included, over the same folder with the same int8 TFLite
model, alternating, `--repeats` times; CPU time is the children's user + system time from
getrusage, so every thread counts. predict runs as shipped: input gate and site monitor on, JSON
lines to /dev/null, its default decode workers. Goal (issue 30): predict's CPU <= 1.5x the loop's,
and the same label on every film.

    python -m edgecxr.benchmarks.measure.predict_overhead runs/demo/export/model_int8.tflite [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from edgecxr.edge_runtime.data_location import resolve_data_dir
from edgecxr.edge_runtime.python_command import ISOLATED_PYTHON, python_module

from ..machine import describe, machine_info
from .published import publish

GOAL = 1.5
PREDICT = "import sys; sys.argv[0] = 'edgecxr'; from edgecxr.cli import main; main()"


def timed(command: list[str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the child, its stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, default=None, help="Data root (default: the usual location)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/predict_overhead"))
    args = parser.parse_args(argv)
    folder = resolve_data_dir(args.data) / "test"
    predict = [*ISOLATED_PYTHON, "-c", PREDICT, "predict", str(args.model), str(folder), "--json"]
    loop = [*python_module("edgecxr.benchmarks.measure.bare_loop"), str(args.model), str(folder)]
    runs = {"predict": [], "bare_loop": []}
    start_up = {"predict": [], "bare_loop": []}  # the same commands on one film: start-up and model load
    outputs = {}
    with tempfile.TemporaryDirectory(prefix="edgecxr-one-film-") as one:
        first = min(p for p in folder.rglob("*") if p.is_file())
        shutil.copy(first, Path(one) / first.name)
        for repeat in range(args.repeats):
            for name, command in (("predict", predict), ("bare_loop", loop)):
                wall, cpu, outputs[name] = timed(command)
                runs[name].append({"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)})
                start_up[name].append(round(timed([*command[:-1], one] if name == "bare_loop" else
                                                  [*command[:-2], one, "--json"])[1], 3))
            print(f"repeat {repeat + 1}: predict {runs['predict'][-1]}, loop {runs['bare_loop'][-1]}", file=sys.stderr)
    rows = [json.loads(line) for line in outputs["predict"].splitlines()]
    threshold = rows[0]["threshold"]
    loop_labels = {Path(line.split("\t")[0]).name: float(line.split("\t")[1]) >= threshold
                   for line in outputs["bare_loop"].splitlines()}
    predicted = {Path(r["path"]).name: r["label"] == "PNEUMONIA" for r in rows if r["label"] in ("NORMAL", "PNEUMONIA")}
    differ = sorted(name for name, positive in predicted.items() if loop_labels.get(name) != positive)
    median = {name: {key: statistics.median(r[key] for r in values) for key in ("wall_s", "cpu_s")}
              for name, values in runs.items()}
    ratio = median["predict"]["cpu_s"] / median["bare_loop"]["cpu_s"]
    per_film = {name: (median[name]["cpu_s"] - statistics.median(start_up[name])) / max(len(rows) - 1, 1) * 1000.0
                for name in runs}
    machine = machine_info()
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python -m edgecxr.benchmarks.measure.predict_overhead " + " ".join(argv or sys.argv[1:]),
              "machine": machine, "machine_text": describe(machine), "model": str(args.model), "films": len(rows),
              "refused": sum(r["label"] == "not_cxr" for r in rows), "runs": runs, "median": median,
              "cpu_ratio": round(ratio, 3), "goal_cpu_ratio": GOAL, "labels_differing": differ,
              "start_up_cpu_s": {name: statistics.median(v) for name, v in start_up.items()},
              "per_film_cpu_ms": {name: round(v, 3) for name, v in per_film.items()},
              "per_film_ratio": round(per_film["predict"] / per_film["bare_loop"], 3)}
    return publish(args.out, args.model.parent.parent.name + "_" + args.model.stem, result, markdown(result))


def markdown(result: dict) -> str:
    m = result["median"]
    return "\n".join([
        f"# predict against the bare loop: {result['model']}", "",
        f"Machine: {result['machine_text']}. Date: {result['date']}. Command: `{result['command']}`.", "",
        f"{result['films']} `test/` films, whole commands with start-up, median of {len(result['runs']['predict'])} "
        f"alternating runs.", "",
        "| command | wall s | CPU s |", "|---|---:|---:|",
        f"| `edgecxr predict --json` (gate and monitor on) | {m['predict']['wall_s']:.2f} | {m['predict']['cpu_s']:.2f} |",
        f"| bare loop (benchmarks/measure/bare_loop.py) | {m['bare_loop']['wall_s']:.2f} | {m['bare_loop']['cpu_s']:.2f} |",
        f"| the same on one film (start-up and model load) | | {result['start_up_cpu_s']['predict']:.2f} / "
        f"{result['start_up_cpu_s']['bare_loop']:.2f} |",
        "", f"CPU per film beyond start-up: predict {result['per_film_cpu_ms']['predict']:.2f} ms, loop "
            f"{result['per_film_cpu_ms']['bare_loop']:.2f} ms (ratio {result['per_film_ratio']:.2f}).", "",
        f"CPU ratio {result['cpu_ratio']:.2f} (goal <= {result['goal_cpu_ratio']}): "
            f"**{'met' if result['cpu_ratio'] <= result['goal_cpu_ratio'] else 'not met'}**. "
            f"Films refused by the gate: {result['refused']}. Labels differing from the loop's: "
            f"{len(result['labels_differing'])} {result['labels_differing'][:10]}.", ""])


if __name__ == "__main__":
    sys.exit(main())
