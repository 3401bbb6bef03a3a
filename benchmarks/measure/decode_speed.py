"""`edgecxr predict` on a folder of full-size films: images per second before and after reduced-size
JPEG decoding and parallel decoding, against the floor of decode + inference, and whether reduced
decoding changes any answer.

    python -m edgecxr.benchmarks.measure.decode_speed runs/compact/export/model_int8.tflite \\
        runs/lite0/export/model_int8.tflite --out benchmarks/results/decode

Films: the data folder's test/ films upsampled to 2,000 pixels (JPEG q90), plus the real
full-resolution radiographs pydicom-data ships when it is installed (benchmarks/measure/full_size_films.py).

Agreement (the rule, set before the first run): reduced decoding would be on by default only if, on every film,
the int8 label is the full decode's, no refusal by the input gate appears or disappears (test films,
the real films, and the non-X-ray catalogue re-encoded as large JPEGs), and max and mean |dp|
between the two decodes are no larger than the artifact's own int8 rounding (its max and mean |dp|
against the Keras model in verify.json).

It did not hold (2026-12-02: labels at the threshold changed), so it is opt-in (--reduced-decode).

Speed: "before" is the command as on main (one image at a time; --before-python main's venv),
"after" the default (full decode, one decoding thread per core), then with --reduced-decode, with
one or all workers; each is the real `edgecxr predict` run in a fresh process on the whole folder
(start-up, model load and CSV writing included). The floor is decode and inference measured alone
in this process: decode+preprocess of every film (full and reduced, one thread) and the
interpreter on ready inputs (batch 1); a serial predict cannot beat 1 / (decode + inference), a
parallel one can at best hide decoding behind inference.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from edgecxr.benchmarks.measure.full_size_films import QUALITY, SIDE, real_films, upsampled_films
from edgecxr.benchmarks.machine import machine_info
from edgecxr.benchmarks.measure.non_xrays import catalogue
from edgecxr.edge_runtime.data_location import resolve_data_dir
from edgecxr.edge_runtime.folders import list_images
from edgecxr.edge_runtime.images import open_image
from edgecxr.edge_runtime.predictor import Predictor
from edgecxr.edge_runtime.preprocessing import preprocess

BATCH = 32


def large_jpeg(data: bytes, side: int = SIDE) -> bytes:
    """A catalogue image upsampled to `side` and re-encoded as JPEG, so reduced decoding applies."""
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB") if image.mode not in ("L", "RGB") else image.copy()
    factor = side / max(image.size)
    image = image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=QUALITY)
    return buffer.getvalue()


def answers(predictor: Predictor, sources: list) -> list:
    return list(predictor.predict_many(sources, batch_size=BATCH))


def agreement(model: Path, films: list[Path], non_xrays: list[bytes], full_answers: tuple,
              reduce_to: int | None = None) -> dict:
    """Reduced against full decoding; `reduce_to` overrides the predictor's default (a sweep)."""
    reduced = Predictor.open(model, reduced_decode=True)
    if reduce_to is not None:
        reduced.reduce_to = reduce_to
    a, na = full_answers
    b = answers(reduced, films)
    both = [(x.probability, y.probability) for x, y in zip(a, b) if x.probability is not None
            and y.probability is not None]
    dp = np.abs(np.array([x - y for x, y in both])) if both else np.zeros(0)
    nb = answers(reduced, non_xrays)
    verify = json.loads((model.parent / "verify.json").read_text())["artifacts"][model.name]["verification"]
    result = {
        "films": len(films),
        "reduce_to": reduced.reduce_to,
        "label_changes": [x.path for x, y in zip(a, b) if x.label != y.label],
        "refusal_changes_films": [x.path for x, y in zip(a, b) if x.refused != y.refused],
        "refused_films_full": sum(x.refused for x in a),
        "refused_films_reduced": sum(y.refused for y in b),
        "max_abs_dp": float(dp.max()) if dp.size else 0.0,
        "mean_abs_dp": float(dp.mean()) if dp.size else 0.0,
        "p99_abs_dp": float(np.quantile(dp, 0.99)) if dp.size else 0.0,
        "int8_vs_keras_max_abs_dp": verify["max_abs_diff"],
        "int8_vs_keras_mean_abs_dp": verify["mean_abs_diff"],
        "non_xrays": len(non_xrays),
        "refusal_changes_non_xrays": [i for i, (x, y) in enumerate(zip(na, nb)) if x.refused != y.refused],
        "refused_non_xrays_full": sum(x.refused for x in na),
        "refused_non_xrays_reduced": sum(y.refused for y in nb),
        "max_gate_distance_change": max((abs(x.gate_distance - y.gate_distance) for x, y in zip(a + na, b + nb)
                                         if x.gate_distance is not None and y.gate_distance is not None),
                                        default=None),
    }
    result["holds"] = (not result["label_changes"] and not result["refusal_changes_films"]
                       and not result["refusal_changes_non_xrays"]
                       and result["max_abs_dp"] <= verify["max_abs_diff"]
                       and result["mean_abs_dp"] <= verify["mean_abs_diff"])
    return result


def floor(model: Path, films: list[Path]) -> dict:
    """Decode + preprocess alone (full and reduced, one thread) and inference alone (batch 1)."""
    predictor = Predictor.open(model, reduced_decode=True)
    spec = predictor.spec
    timings = {}
    for name, reduce_to in (("decode_full_ms", None), ("decode_reduced_ms", predictor.reduce_to)):
        started = time.perf_counter()
        for film in films:
            preprocess(open_image(film, reduce_to=reduce_to), spec)
        timings[name] = (time.perf_counter() - started) * 1000.0 / len(films)
    inputs = [preprocess(open_image(film, reduce_to=predictor.reduce_to), spec)[None] for film in films[:200]]
    predictor.backend.predict(inputs[0])  # the first call allocates
    started = time.perf_counter()
    for batch in inputs:
        predictor.backend.predict(batch)
    timings["inference_ms"] = (time.perf_counter() - started) * 1000.0 / len(inputs)
    timings["floor_serial_images_per_s"] = 1000.0 / (timings["decode_full_ms"] + timings["inference_ms"])
    timings["floor_serial_reduced_images_per_s"] = 1000.0 / (timings["decode_reduced_ms"] + timings["inference_ms"])
    return timings


def command_speed(model: Path, folder: Path, n_films: int, options: list[str], python: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        command = [python, "-m", "edgecxr.cli", "predict", str(model.resolve()), str(folder.resolve()), "--csv",
                   str(Path(tmp) / "out.csv"), *options]
        started = time.perf_counter()
        # Run from elsewhere: `python -m` puts the working directory first on sys.path, so run from
        # a checkout it would import that checkout's edgecxr whatever the interpreter.
        done = subprocess.run(command, capture_output=True, text=True, cwd=tmp,
                              env={**os.environ, "COLUMNS": "200"})
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return {"command": " ".join(command[1:]), "seconds": round(seconds, 2),
            "images_per_s": round(n_films / seconds, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=None, help="Kaggle-layout data folder (its test/ is used)")
    parser.add_argument("--films", type=Path, default=Path(tempfile.gettempdir()) / "edgecxr-full-size-films")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/decode"))
    parser.add_argument("--before-python", default=sys.executable,
                        help="The Python whose edgecxr is 'before' (e.g. main's venv); default: this one "
                             "with --workers 1")
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--sweep", type=int, nargs="*", default=[],
                        help="Also check reduced decoding down to these sides (pixels)")
    args = parser.parse_args(argv)

    root = resolve_data_dir(args.data) / "test"
    films = upsampled_films(list_images(root), root, args.films / "test")
    real, real_note = real_films(args.films / "real")
    samples, _ = catalogue(list_images(root)[:20], transformed=20, seed=0)
    non_xrays = [large_jpeg(item.data) for item in samples]
    before_options = [] if args.before_python != sys.executable else ["--workers", "1"]
    result = {"machine": machine_info(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": " ".join(["python -m edgecxr.benchmarks.measure.decode_speed", *(argv or sys.argv[1:])]),
              "films": {"upsampled": len(films), "side": SIDE, "quality": QUALITY, "real": [p.name for p in real],
                        "real_note": real_note},
              "cores": os.cpu_count(), "models": {}}
    for model in args.models:
        entry = {}
        if not args.skip_agreement:
            full = Predictor.open(model)
            full_answers = (answers(full, films + real), answers(full, non_xrays))
            entry["agreement"] = agreement(model, films + real, non_xrays, full_answers)
            entry["agreement_sweep"] = {side: agreement(model, films + real, non_xrays, full_answers, side)
                                        for side in args.sweep}
            for side, found in [("default", entry["agreement"]), *entry["agreement_sweep"].items()]:
                print(model, "agreement", side, {k: v for k, v in found.items() if "changes" not in k},
                      {k: len(v) for k, v in found.items() if "changes" in k}, flush=True)
        if args.skip_speed:
            result["models"][str(model)] = entry
            continue
        entry["floor"] = floor(model, films)
        print(model, "floor", entry["floor"], flush=True)
        entry["before"] = command_speed(model, args.films / "test", len(films), before_options, args.before_python)
        folder = args.films / "test"
        entry["after"] = command_speed(model, folder, len(films), [], sys.executable)
        entry["after_reduced_decode"] = command_speed(model, folder, len(films), ["--reduced-decode"], sys.executable)
        entry["after_reduced_decode_one_worker"] = command_speed(model, folder, len(films),
                                                                 ["--reduced-decode", "--workers", "1"], sys.executable)
        print(model, "speed", {k: v for k, v in entry.items() if k.startswith(("before", "after"))}, flush=True)
        result["models"][str(model)] = entry
    args.out.mkdir(parents=True, exist_ok=True)
    name = "agreement" if args.skip_speed else "speed" if args.skip_agreement else "decode_speed"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
