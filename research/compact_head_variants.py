"""The compact head study (research/compact_head_rule.md): train each candidate, check its heat map.

For each candidate and seed: `edgecxr train` with `compact_cnn` built with the candidate's options
(the run's arch stays `compact`, so every later command reads it as usual), `edgecxr convert
--quantize int8 --format tflite`, the cascading randomisation check (cam, 30 validation films) and
the feature map's first-direction share. Validation figures come from the run's own metrics;
`test/` is scored by `edgecxr evaluate` for the record only. The rule is applied afterwards by
reading the table (research/results/compact_head/compact_head.md).

    python -m research.compact_head_variants [--candidates B C1 C2 C3 C4] [--seeds 42] [--runs runs/compact_head]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

# Spelled out in full: C4 became compact_cnn's default after the study, B is the earlier net.
EARLIER = {"pooled_dropout": 0.4, "pool_last_block": True}
CANDIDATES = {
    "B": EARLIER,
    "C1": {**EARLIER, "pooled_dropout": 0.0},
    "C2": {**EARLIER, "widths": (16, 32, 128)},
    "C3": {**EARLIER, "pool_last_block": False},
    "C4": {"pooled_dropout": 0.0, "pool_last_block": False},
}
OUT = Path("research/results/compact_head")


def train_candidate(name: str, seed: int, run: Path) -> None:
    """`edgecxr train`'s own code with the compact spec's builder swapped for the candidate's."""
    from edgecxr.train import model_specs
    from edgecxr.train.hparams import TrainConfig
    from edgecxr.train.models import compact_cnn
    from edgecxr.train.trainer import train

    options = CANDIDATES[name]
    model_specs.MODEL_SPECS["compact"] = dataclasses.replace(
        model_specs.MODEL_SPECS["compact"], build=lambda input_shape, **_: compact_cnn(input_shape, **options))
    from edgecxr.edge_runtime.data_location import resolve_data_dir

    train(TrainConfig(data=resolve_data_dir(None), out=run, seed=seed, overwrite=True))


def _run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def measure(name: str, seed: int, runs: Path) -> dict:
    from research.feature_map_direction import first_direction_shares

    import numpy as np

    run = runs / f"{name}_s{seed}"
    if not (run / "metrics.json").exists():  # a study stopped after training goes on from there
        _run([sys.executable, "-m", "research.compact_head_variants", "--train-one", name, str(seed), str(run)])
    edgecxr = str(Path(sys.executable).with_name("edgecxr"))
    _run([edgecxr, "convert", str(run), "--quantize", "int8", "--format", "tflite"])
    _run([edgecxr, "evaluate", str(run), "--json", str(run / "test_metrics.json")])
    _run([sys.executable, "-m", "edgecxr.benchmarks.measure.heatmap_sanity", str(run), "--method", "cam",
          "--images", "30", "--timed-images", "1", "--agreement-images", "0", "--out", str(OUT / "sanity")])
    sanity = json.loads((OUT / "sanity" / f"{run.name}_cam.json").read_text())["sanity"]
    shares = first_direction_shares(run, 30, 0)
    metrics = json.loads((run / "metrics.json").read_text())
    test = json.loads((run / "test_metrics.json").read_text())
    report = json.loads((run / "export" / "verify.json").read_text())
    return {"candidate": name, "options": {k: list(v) if isinstance(v, tuple) else v
                                           for k, v in CANDIDATES[name].items()},
            "seed": seed, "run": str(run), "train_s": json.loads((run / "metrics.json").read_text())["train_seconds"],
            "shift_abs": sanity["real_vs_shift"]["absolute"]["median"],
            "stages_abs": [(s["deepest"], s["absolute"]["median"]) for s in sanity["cascade"]],
            "first_direction_share": float(np.median(shares)),
            "validation": metrics, "test": test, "verify_failures": report["failures"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--runs", type=Path, default=Path("runs/compact_head"))
    parser.add_argument("--train-one", nargs=3, metavar=("NAME", "SEED", "RUN"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.train_one:
        name, seed, run = args.train_one
        train_candidate(name, int(seed), Path(run))
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for name in args.candidates:
            row = measure(name, seed, args.runs)
            row["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            row["command"] = "python -m research.compact_head_variants " + " ".join(argv or sys.argv[1:])
            (OUT / f"{name}_s{seed}.json").write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
            print(json.dumps({k: row[k] for k in ("candidate", "seed", "shift_abs", "stages_abs",
                                                   "first_direction_share")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
