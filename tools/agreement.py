"""`make pi-check`'s verdict: do the emulated Raspberry Pi's predictions equal the x86 ones?

tools/pi_check.sh runs `edgecxr predict --json` over the same real test/ images on this machine
(x86_64) and inside a Debian bookworm arm64 root filesystem under qemu, for each model and runtime.
Here the two JSON-lines files of each pair are matched image by image: the labels must be equal
and the probabilities within the tolerance of the artifact (one int8 output step for an int8
TFLite model, 1e-4 for fp32). Prints the agreement table; exit code 1 if any pair disagrees.

    python tools/agreement.py [--other NAME] NAME MODEL X86.jsonl ARM.jsonl [NAME MODEL X86 ARM ...]

`make cpu-check` uses the same verdict for an emulated AVX2-only x86 CPU (`--other haswell`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

FP32_TOLERANCE = 1e-4


@dataclass
class Agreement:
    runtime: str
    images: int
    labels_equal: int
    max_abs_diff: float
    tolerance: float
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems and self.images > 0 and self.labels_equal == self.images


def read_rows(path: Path) -> dict[str, dict]:
    """Rows keyed by class folder and file name: the two machines see the images at different paths."""
    rows = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows["/".join(Path(row["path"]).parts[-2:])] = row
    return rows


def tolerance_for(model: Path) -> float:
    """One output quantization step for an int8 model (kernels may round a last bit differently on
    ARM), 1e-4 for a float model; read from the model's metadata, as the runtime does."""
    from edgecxr.edge_runtime.metadata import read_metadata

    metadata = read_metadata(model)
    if metadata.quantization != "int8":
        return FP32_TOLERANCE
    from edgecxr.edge_runtime.predictor import Predictor

    output = getattr(Predictor.open(model).backend, "output", None)  # TFLite only
    scale = output["quantization"][0] if isinstance(output, dict) else 0.0
    return float(scale) if scale else FP32_TOLERANCE


def compare(runtime: str, expected: dict[str, dict], got: dict[str, dict], tolerance: float,
            other: str = "arm64") -> Agreement:
    problems = []
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing:
        problems.append(f"{len(missing)} image(s) missing on {other}, e.g. {missing[0]}")
    if extra:
        problems.append(f"{len(extra)} image(s) only on {other}, e.g. {extra[0]}")
    same, worst = 0, 0.0
    for key in sorted(set(expected) & set(got)):
        want, have = expected[key], got[key]
        if want["label"] == have["label"]:
            same += 1
        else:
            problems.append(f"{key}: x86 {want['label']}, {other} {have['label']}")
        if (want["probability"] is None) != (have["probability"] is None):
            problems.append(f"{key}: a probability on one machine only")
        elif want["probability"] is not None:
            diff = abs(float(want["probability"]) - float(have["probability"]))
            worst = max(worst, diff)
            if diff > tolerance + 1e-9:
                problems.append(f"{key}: |dp| {diff:.3g} > {tolerance:.3g}")
    return Agreement(runtime, len(expected), same, worst, tolerance, problems)


def table(rows: list[Agreement]) -> str:
    lines = ["| runtime | images | labels equal | max abs dp | tolerance | verdict |",
             "|:--|--:|--:|--:|--:|:--|"]
    for row in rows:
        lines.append(f"| {row.runtime} | {row.images} | {row.labels_equal}/{row.images} | {row.max_abs_diff:.2e} | "
                     f"{row.tolerance:.2e} | {'same' if row.ok else 'DIFFERENT'} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    other = "arm64"
    if argv[:1] == ["--other"] and len(argv) > 1:
        other, argv = argv[1], argv[2:]
    if not argv or len(argv) % 4:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    results = []
    for start in range(0, len(argv), 4):
        name, model, x86, arm = argv[start:start + 4]
        results.append(compare(name, read_rows(Path(x86)), read_rows(Path(arm)), tolerance_for(Path(model)), other))
    print(table(results))
    for row in results:
        for problem in row.problems[:10]:
            print(f"{row.runtime}: {problem}")
    return 0 if all(row.ok for row in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
