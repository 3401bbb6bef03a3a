"""How one-dimensional a model's last convolutional block is: why a shuffled head keeps the map's shape.

For each run, the fp32 TFLite artifact's exported feature map (the block its pooling averages) on
30 validation films (seeded); each film's (cells x channels) map less its per-channel spatial mean;
the share of that spatial variation along its first singular direction. Near 1, every read-out of
the features draws nearly the same heat map up to sign, which is what the cascading randomisation
check sees when it shuffles the head alone.

    python -m research.feature_map_direction runs/demo runs/lite0 [--images 30] [--out research/results/feature_map_direction]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.predictor import Predictor
from edgecxr.edge_runtime.preprocessing import preprocess
from edgecxr.edge_runtime.run_folder import RunFolder


def first_direction_shares(run_dir: Path, images: int, seed: int) -> list[float]:
    run = RunFolder.open(run_dir)
    samples = run.split("validation")
    random.Random(seed).shuffle(samples)
    predictor = Predictor.open(run.export_dir / "model_fp32.tflite")
    shares = []
    for sample in samples[:images]:
        model_input = preprocess(sample.path, predictor.spec)
        feature_map = predictor.backend.infer(model_input[None], feature_maps=True).feature_maps[0]
        cells = feature_map.reshape(-1, feature_map.shape[-1]).astype(np.float64)
        energy = np.linalg.svd(cells - cells.mean(axis=0), compute_uv=False) ** 2
        shares.append(float(energy[0] / energy.sum()))
    return shares


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("research/results/feature_map_direction"))
    args = parser.parse_args(argv)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python -m research.feature_map_direction " + " ".join(argv or sys.argv[1:]), "runs": {}}
    for run in args.runs:
        shares = first_direction_shares(run, args.images, args.seed)
        result["runs"][str(run)] = {"median": float(np.median(shares)), "q25": float(np.percentile(shares, 25)),
                                    "q75": float(np.percentile(shares, 75)), "images": len(shares)}
        print(run, result["runs"][str(run)])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "feature_map_direction.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
