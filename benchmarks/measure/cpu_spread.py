"""How far one training run moves between CPU profiles: the tiny run of the test suite (40 real films per
class, one epoch, seed 1), trained once per oneDNN ISA level in its own process (ONEDNN_MAX_CPU_ISA), and
the spread of its threshold, validation AUC and loss. What the tests' recorded-figure tolerance rests on
(docs/cpu-profiles.md).

    python -m edgecxr.benchmarks.measure.cpu_spread --data ../shared/data/chest_xray --out benchmarks/results/cpu_spread
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from edgecxr.edge_runtime.atomic import write_json_atomic
from edgecxr.edge_runtime.python_command import python_module

from ..machine import describe, machine_info

ISA_LEVELS = ("DEFAULT", "AVX512_CORE", "AVX2", "SSE41")


def tiny_folder(data: Path, target: Path, count: int = 40) -> Path:
    for label in ("NORMAL", "PNEUMONIA"):
        (target / "train" / label).mkdir(parents=True)
        for path in sorted((data / "train" / label).iterdir())[:count]:
            shutil.copy(path, target / "train" / label / path.name)
    return target


def train_under(isa: str, data: Path, out: Path) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "EDGECXR_CACHE": str(out.parent / f"cache-{isa}")}
    if isa != "DEFAULT":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    done = subprocess.run([*python_module("edgecxr.cli"), "train", "--data", str(data), "--out", str(out),
                           "--epochs", "1", "--batch-size", "16", "--val-fraction", "0.25", "--seed", "1"],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"isa": isa, "error": done.stderr.strip().splitlines()[-1:]}
    validation = json.loads((out / "metrics.json").read_text())["validation"]
    history = json.loads((out / "history.json").read_text())
    return {"isa": isa, "threshold": validation["threshold"], "roc_auc": validation["roc_auc"],
            "val_loss": history["val_loss"][-1], "loss": history["loss"][-1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_spread"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = tiny_folder(args.data, Path(tmp) / "tiny")
        rows = [train_under(isa, data, Path(tmp) / f"run-{isa}") for isa in ISA_LEVELS]
    for row in rows:
        print(row, file=sys.stderr)
    ok = [r for r in rows if "error" not in r]
    spread = {key: max(r[key] for r in ok) - min(r[key] for r in ok) for key in ("threshold", "roc_auc", "val_loss",
                                                                                 "loss")} if ok else {}
    result = {"command": "python -m edgecxr.benchmarks.measure.cpu_spread " + " ".join(argv or sys.argv[1:]),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": describe(machine_info()),
              "runs": rows, "spread": spread}
    write_json_atomic(args.out / "cpu_spread.json", result)
    print(json.dumps(spread, indent=1))
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
