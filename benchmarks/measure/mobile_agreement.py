"""The phone artifacts against `edgecxr predict` on every `test/` film (issue 29).

For each export folder: `edgecxr predict` (the command, as shipped) labels every film with the int8
TFLite model; MediaPipe Tasks' ImageClassifier runs the mobile model on frames decoded by the edge
runtime's decoder, and again on frames MediaPipe decodes itself (`mp.Image.create_from_file`, what
an app using MediaPipe's loader gets); LiteRT runs the mobile model; onnxruntime runs each .ort file
beside its .onnx. The mobile label is PNEUMONIA's score at the stored threshold. Goals: MediaPipe's
labels equal predict's on >= 99 % of films; each .ort equal to its .onnx on every film; the mobile
file <= 1.1x the int8 file.

    python -m edgecxr.benchmarks.measure.mobile_agreement runs/demo/export runs/lite0/export
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.data_location import resolve_data_dir
from edgecxr.edge_runtime.folders import labelled_images

from ..machine import describe, machine_info
from .published import publish

AGREEMENT_GOAL, SIZE_GOAL = 0.99, 1.1
PREDICT = "import sys; sys.argv[0] = 'edgecxr'; from edgecxr.cli import main; main()"


def predict_probabilities(model: Path, folder: Path) -> dict[str, float]:
    result = subprocess.run([sys.executable, "-c", PREDICT, "predict", str(model), str(folder), "--json"],
                            capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {Path(r["path"]).name: r["probability"] for r in rows}


def mediapipe_scores(model: Path, paths: list[Path], frames: list[np.ndarray] | None) -> np.ndarray:
    """PNEUMONIA's score per film; frames from the edge decoder, or (None) MediaPipe's own decoder."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.vision import ImageClassifier, ImageClassifierOptions

    options = ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(model)), max_results=2)
    scores = []
    with ImageClassifier.create_from_options(options) as classifier:
        for index, path in enumerate(paths):
            image = (mp.Image.create_from_file(str(path)) if frames is None else
                     mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frames[index])))
            categories = classifier.classify(image).classifications[0].categories
            scores.append(next(c.score for c in categories if c.category_name == "PNEUMONIA"))
    return np.asarray(scores, dtype=np.float64)


def arm_style_probabilities(onnx_file: Path, inputs: np.ndarray) -> np.ndarray:
    """The .onnx run with the .ort's target-platform optimisations (convert/onnx_export.py)."""
    import onnxruntime as ort

    from edgecxr.convert.onnx_export import target_session_options

    session = ort.InferenceSession(str(onnx_file), target_session_options(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    index = next(i for i, o in enumerate(session.get_outputs()) if o.shape[-1] == 1)
    return np.array([float(session.run(None, {name: x[None]})[index].reshape(-1)[0]) for x in inputs])


def ort_rows(folder: Path, paths: list[Path]) -> list[dict]:
    from edgecxr.edge_runtime.backends import open_backend

    rows = []
    for tag in ("fp32", "int8"):
        ort_file, onnx_file = folder / f"model_{tag}.ort", folder / f"model_{tag}.onnx"
        if not (ort_file.is_file() and onnx_file.is_file()):
            continue
        ort, onnx = open_backend(ort_file), open_backend(onnx_file)
        inputs = np.stack([onnx.prepare(p) for p in paths])
        got, want = ort.predict_proba(inputs), onnx.predict_proba(inputs)
        as_on_arm = arm_style_probabilities(onnx_file, inputs.astype(np.float32))
        threshold = onnx.metadata.threshold
        rows.append({"file": ort_file.name, "films": len(paths), "equal_probability": int(np.sum(got == want)),
                     "max_abs_diff": float(np.max(np.abs(got - want))),
                     "equal_probability_onnx_arm_choices": int(np.sum(got == as_on_arm)),
                     "max_abs_diff_onnx_arm_choices": float(np.max(np.abs(got - as_on_arm))),
                     "equal_label": int(np.sum((got >= threshold) == (want >= threshold))),
                     "size_bytes": ort_file.stat().st_size, "onnx_size_bytes": onnx_file.stat().st_size})
    return rows


def measure(folder: Path, test: Path) -> dict:
    from edgecxr.edge_runtime.backends import open_backend

    mobile_file, int8_file = folder / "model_int8_mobile.tflite", folder / "model_int8.tflite"
    mobile = open_backend(mobile_file)
    threshold = mobile.metadata.threshold
    paths = [Path(item.path) for item in labelled_images(test)]
    labels = np.array([item.label for item in labelled_images(test)])
    predicted = predict_probabilities(int8_file, test)
    predict_p = np.array([predicted[p.name] for p in paths], dtype=np.float64)
    frames = [mobile.prepare(p) for p in paths]
    litert = mobile.predict_proba(np.stack(frames))
    through_edge_decoder = mediapipe_scores(mobile_file, paths, frames)
    through_own_decoder = mediapipe_scores(mobile_file, paths, None)

    def agreement(scores) -> dict:
        same = (scores >= threshold) == (predict_p >= threshold)
        return {"equal_labels": int(same.sum()), "share": float(same.mean()),
                "max_abs_diff_vs_predict": float(np.max(np.abs(scores - predict_p))),
                "accuracy": float(np.mean((scores >= threshold) == (labels == 1)))}

    size, int8_size = mobile_file.stat().st_size, int8_file.stat().st_size
    return {
        "export": str(folder), "films": len(paths), "threshold": threshold,
        "predict_int8_accuracy": float(np.mean((predict_p >= threshold) == (labels == 1))),
        "mediapipe_edge_decoder": agreement(through_edge_decoder),
        "mediapipe_own_decoder": agreement(through_own_decoder),
        "litert_mobile": agreement(litert),
        "mediapipe_vs_litert_max_abs_diff": float(np.max(np.abs(through_edge_decoder - litert))),
        "mobile_size_bytes": size, "int8_size_bytes": int8_size, "size_ratio": size / int8_size,
        "ort": ort_rows(folder, paths),
    }


def markdown(results: list[dict], machine: dict, command: str) -> str:
    lines = [f"Command: `{command}`", f"Machine: {describe(machine)}", "",
             "| export | films | MediaPipe (edge decoder) = predict | MediaPipe (own decoder) = predict | "
             "LiteRT mobile = predict | max dp MediaPipe vs predict | mobile / int8 size |",
             "|:--|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        e, o, l = r["mediapipe_edge_decoder"], r["mediapipe_own_decoder"], r["litert_mobile"]
        lines.append(f"| {r['export']} | {r['films']} | {e['equal_labels']} ({e['share']:.1%}) | "
                     f"{o['equal_labels']} ({o['share']:.1%}) | {l['equal_labels']} ({l['share']:.1%}) | "
                     f"{e['max_abs_diff_vs_predict']:.4f} | {r['mobile_size_bytes'] / 1024:.0f} / "
                     f"{r['int8_size_bytes'] / 1024:.0f} KiB = {r['size_ratio']:.3f}x |")
    lines += ["", "| .ort file (ARM target) | films | probability = .onnx on x86 | max dp | = .onnx with ARM's "
                  "load-time choices | max dp | label = .onnx | size |", "|:--|--:|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        for o in r["ort"]:
            lines.append(f"| {r['export']}/{o['file']} | {o['films']} | {o['equal_probability']} | "
                         f"{o['max_abs_diff']:.2g} | {o['equal_probability_onnx_arm_choices']} | "
                         f"{o['max_abs_diff_onnx_arm_choices']:.2g} | {o['equal_label']} | "
                         f"{o['size_bytes'] / 1024:.0f} KiB |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exports", type=Path, nargs="+", help="Export folders (RUN/export)")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mobile"))
    args = parser.parse_args(argv)
    test = resolve_data_dir(args.data) / "test"
    results = [measure(folder, test) for folder in args.exports]
    machine = machine_info()
    command = "python -m edgecxr.benchmarks.measure.mobile_agreement " + " ".join(map(str, args.exports))
    payload = {"command": command, "machine": machine, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "goals": {"agreement": AGREEMENT_GOAL, "size_ratio": SIZE_GOAL}, "results": results}
    return publish(args.out, "mobile_agreement", payload, markdown(results, machine, command))


if __name__ == "__main__":
    raise SystemExit(main())
