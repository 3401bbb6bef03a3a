"""Heat-map sanity check (Adebayo et al. 2018, cascading randomisation) and heat-map cost per image.

A heat map that looks the same whatever the weights explains nothing. For a trained run, this
shuffles the weights of the top weighted layers of the Keras model (the classifier head, then
progressively deeper), exports each copy with the product's own exporter (SavedModel ->
fp32 TFLite, convert/keras_graph.py and convert/tflite_export.py, with the copy's own head in its
metadata, convert/class_activation.py), and computes the edge runtime's maps (edge_runtime/heatmap.py,
`--method cam` or `occlusion`) on validation images. It reports the Spearman rank
correlation of each randomised model's map with the real model's, next to the real model's map
with itself on the film shifted by one model-input pixel: a map that passes changes far more under
randomisation than under the shift. Weights are shuffled within each tensor (a permutation), so each
layer keeps its weight statistics and activations neither vanish nor explode.

It also times `heatmap()` per image for the run's int8 and fp32 TFLite and ONNX artifacts, and, for
cam, reports the rank agreement of the cam and occlusion maps of the int8 TFLite artifact on test/
films (pictures only: no label is read).

    python -m edgecxr.benchmarks.measure.heatmap_sanity runs/compact --images 30 [--method cam]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.backends import open_backend
from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.heatmap import DEFAULT_PATCHES, heatmap
from edgecxr.edge_runtime.images import open_image, to_grayscale
from edgecxr.edge_runtime.metadata import read_metadata
from edgecxr.edge_runtime.predictor import Predictor
from edgecxr.edge_runtime.run_folder import RunFolder

from ..machine import describe, machine_info
from .published import publish

TIMED_ARTIFACTS = ("model_int8.tflite", "model_int8.onnx", "model_fp32.tflite", "model_fp32.onnx")
# Shares of the weighted layers randomised, counted from the output: the head first, then deeper.
CASCADE = (0.0, 0.1, 0.25, 0.5, 1.0)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation with average ranks for ties (int8 maps have many); nan if either is constant."""
    ra, rb = _ranks(np.ravel(a)), _ranks(np.ravel(b))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def weighted_layers(model) -> list:
    """Leaf layers holding weights, input to output (nested backbones flattened)."""
    from edgecxr.convert.keras_graph import all_layers

    return [layer for layer in all_layers(model) if layer.weights and not getattr(layer, "layers", None)]


def randomise_top(model, count: int, seed: int) -> list[str]:
    """Shuffle, in place, every weight tensor of the top `count` weighted layers; their names."""
    rng = np.random.default_rng(seed)
    layers = weighted_layers(model)[::-1][:count]
    for layer in layers:
        layer.set_weights([rng.permutation(w.ravel()).reshape(w.shape) for w in layer.get_weights()])
    return [layer.name for layer in layers]


def fp32_tflite(model, spec, folder: Path, name: str) -> Path:
    """The product's export path: checked SavedModel, then the TFLite converter without quantization."""
    from edgecxr.convert.keras_graph import export_saved_model
    from edgecxr.convert.tflite_export import convert_tflite

    saved = folder / f"{name}_saved_model"
    export_saved_model(model, spec, saved)
    target = folder / f"{name}.tflite"
    target.write_bytes(convert_tflite(saved, "none"))
    return target


def predictor_for(path: Path, metadata, model=None) -> Predictor:
    """The exported copy with the real metadata, its head replaced by `model`'s (the randomised one)."""
    from dataclasses import replace

    from edgecxr.convert.class_activation import describe_head
    from edgecxr.edge_runtime.backends import TFLiteBackend

    if model is not None:
        metadata = replace(metadata, details={**metadata.details, "class_activation": describe_head(model)})
    return Predictor(TFLiteBackend(path, metadata=metadata))


def shifted(film: np.ndarray, pixels: int) -> np.ndarray:
    """The film moved right by `pixels`, the left edge column repeated (no wrap-around)."""
    out = np.empty_like(film)
    out[:, pixels:] = film[:, :-pixels]
    out[:, :pixels] = film[:, :1]
    return out


def sanity(run: RunFolder, films: list[np.ndarray], patches: int, seed: int, method: str) -> dict:
    import keras

    from edgecxr.edge_runtime.preprocessing import PreprocessSpec  # noqa: F401 - spec type in metadata

    real_path = run.export_dir / "model_fp32.tflite"
    metadata = read_metadata(real_path)
    spec = metadata.preprocessing
    real = Predictor.open(real_path)
    real_maps = [heatmap(real, film, patches, method=method) for film in films]
    shift = [max(1, round(film.shape[1] / spec.width)) for film in films]
    shifted_maps = [heatmap(real, shifted(film, s), patches, method=method) for film, s in zip(films, shift)]
    n_layers = len(weighted_layers(keras.models.load_model(run.model_path, compile=False)))
    stages = []
    with tempfile.TemporaryDirectory(prefix="heatmap_sanity_") as tmp:
        for share in CASCADE:
            count = max(1, math.ceil(share * n_layers))
            if stages and count <= stages[-1]["layers_randomised"]:
                continue
            model = keras.models.load_model(run.model_path, compile=False)
            names = randomise_top(model, count, seed)
            path = fp32_tflite(model, spec, Path(tmp), f"top{count}")
            randomised = predictor_for(path, metadata, model)
            maps = [heatmap(randomised, film, patches, method=method) for film in films]
            stages.append({"layers_randomised": count, "of": n_layers, "deepest": names[-1], "top": names[0],
                           **_correlations(real_maps, maps),
                           "mean_abs_probability_change": float(np.mean([abs(r.probability - m.probability)
                                                                          for r, m in zip(real_maps, maps)]))})
            print(f"  top {count}/{n_layers} layers randomised (down to {names[-1]}): "
                  f"median rho {stages[-1]['median']:.3f}, of abs. maps {stages[-1]['absolute']['median']:.3f}",
                  flush=True)
    return {"artifact": real_path.name, "method": method, "shift_input_pixels": 1, "shift_film_pixels": sorted(set(shift)),
            "real_vs_shift": _correlations(real_maps, shifted_maps), "cascade": stages,
            "evaluations_per_image": real_maps[0].evaluations}


def _correlations(real_maps: list, other_maps: list) -> dict:
    """Median/IQR rank correlation of the signed change maps, and of their absolute values (Adebayo
    et al. report both: a map whose sign flips but whose shape stays is not randomised)."""
    return {**_summary([spearman(r.change, o.change) for r, o in zip(real_maps, other_maps)]),
            "absolute": _summary([spearman(np.abs(r.change), np.abs(o.change)) for r, o in zip(real_maps, other_maps)])}


def _summary(values: list[float]) -> dict:
    finite = np.array([v for v in values if np.isfinite(v)])
    if finite.size == 0:
        return {"median": float("nan"), "q25": float("nan"), "q75": float("nan"), "n": 0, "undefined": len(values)}
    return {"median": float(np.median(finite)), "q25": float(np.percentile(finite, 25)),
            "q75": float(np.percentile(finite, 75)), "n": int(finite.size), "undefined": len(values) - int(finite.size)}


def agreement(run: RunFolder, films: list[np.ndarray], patches: int) -> dict:
    """Rank agreement of the cam and occlusion maps of the int8 TFLite artifact on the same films."""
    predictor = Predictor.open(run.export_dir / "model_int8.tflite")
    pairs = [(heatmap(predictor, film, patches, method="cam"), heatmap(predictor, film, patches, method="occlusion"))
             for film in films]
    return {"artifact": "model_int8.tflite", **_summary([spearman(c.change, o.change) for c, o in pairs]),
            "heat": _summary([spearman(c.heat, o.heat) for c, o in pairs])}


def costs(run: RunFolder, films: list[np.ndarray], patches: int, threads: int | None,
          method: str = "occlusion") -> list[dict]:
    rows = []
    for name in TIMED_ARTIFACTS:
        path = run.export_dir / name
        if not path.exists():
            rows.append({"artifact": name, "error": "not exported"})
            continue
        predictor = Predictor(open_backend(path, threads=threads))
        try:
            heatmap(predictor, films[0], patches, method=method)  # warm-up: first-call allocation is not per-image cost
        except EdgecxrError as exc:  # e.g. an artifact exported before the feature-map output
            rows.append({"artifact": name, "error": str(exc)})
            continue
        times = []
        for film in films:
            started = time.perf_counter()  # the whole call: decode, preprocessing, inference(s), map
            heatmap(predictor, film, patches, method=method)
            times.append((time.perf_counter() - started) * 1000.0)
        rows.append({"artifact": name, "runtime": predictor.runtime, "images": len(times),
                     "median_ms": float(np.median(times)), "min_ms": float(np.min(times)),
                     "max_ms": float(np.max(times))})
        print(f"  {name}: median {rows[-1]['median_ms']:.0f} ms per heat map", flush=True)
    return rows


def _row(title: str, c: dict) -> str:
    a = c["absolute"]
    return (f"| {title} | {c['median']:.3f} ({c['q25']:.3f} to {c['q75']:.3f}) | "
            f"{a['median']:.3f} ({a['q25']:.3f} to {a['q75']:.3f}) | {c['n']} |")


def markdown(result: dict) -> str:
    s = result["sanity"]
    lines = [f"# Heat-map sanity check and cost: {result['run']}", "",
             f"Machine: {result['machine_text']}. Date: {result['date']}. Command: `{result['command']}`.",
             "Timings share a 2-core machine with other jobs: read them as upper bounds"
             + (f" (1-minute load average {result['load_average_1min']['before_costs']} before timing, "
                f"{result['load_average_1min']['after_costs']} after)." if "load_average_1min" in result else "."), "",
             (f"Occlusion sensitivity, {result['settings']['patches']} patches per side (half-overlapping, "
              f"{s['evaluations_per_image']} inferences per image)" if s.get("method", "occlusion") == "occlusion"
              else "Class-activation map (cam: the feature map weighted by the head's logit gradient, from the "
                   "answer's own inference)")
             + f", on {result['images']} validation images; Spearman rank correlation of the signed map (negative: "
               f"evidence for pneumonia) with the real {s['artifact']}'s map:", "",
             "| compared with the real model's map | median rho (IQR) | median rho of abs. maps (IQR) | images |",
             "|---|---:|---:|---:|",
             _row(f"same model, film shifted by 1 input pixel ({'/'.join(map(str, s['shift_film_pixels']))} film px)",
                  s["real_vs_shift"])]
    for stage in s["cascade"]:
        lines.append(_row(f"top {stage['layers_randomised']} of {stage['of']} weighted layers shuffled "
                          f"(down to `{stage['deepest']}`)", stage))
    if "cam_vs_occlusion" in result:
        c = result["cam_vs_occlusion"]
        lines += ["", f"Agreement of the cam and occlusion maps of {c['artifact']} on {c['films']} test/ films "
                      f"(no labels read): median Spearman rho of the signed maps {c['median']:.3f} "
                      f"(IQR {c['q25']:.3f} to {c['q75']:.3f}), of the heat shown {c['heat']['median']:.3f} "
                      f"(IQR {c['heat']['q25']:.3f} to {c['heat']['q75']:.3f})."]
    lines += ["", "Cost of one heat map (edgecxr.edge_runtime.heatmap.heatmap, decode included):", "",
              "| artifact | runtime | median ms | min | max | images |", "|---|---|---:|---:|---:|---:|"]
    for row in result["costs"]:
        if "error" in row:
            lines.append(f"| {row['artifact']} | {row['error']} | | | | |")
        else:
            lines.append(f"| {row['artifact']} | {row['runtime']} | {row['median_ms']:.0f} | {row['min_ms']:.0f} | "
                         f"{row['max_ms']:.0f} | {row['images']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--images", type=int, default=30, help="validation images (never test/)")
    parser.add_argument("--timed-images", type=int, default=10)
    parser.add_argument("--patches", type=int, default=DEFAULT_PATCHES)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=("cam", "occlusion"), default="cam")
    parser.add_argument("--agreement-images", type=int, default=30, help="test/ films for cam vs occlusion (cam only)")
    parser.add_argument("--data", type=Path, default=None, help="data root for --agreement-images")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/heatmap"))
    args = parser.parse_args(argv)
    from edgecxr.edge_runtime.extras import require_extra

    require_extra("heatmap_sanity", "train", ("tensorflow", "keras"))
    run = RunFolder.open(args.run)
    samples = run.split("validation")
    random.Random(args.seed).shuffle(samples)
    films = [np.asarray(to_grayscale(open_image(s.path))) for s in samples[:args.images]]
    machine = machine_info()
    started = time.perf_counter()
    print(f"{args.run}: sanity check on {len(films)} validation images", flush=True)
    result = {"run": str(args.run), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python -m edgecxr.benchmarks.measure.heatmap_sanity " + " ".join(argv or sys.argv[1:]),
              "machine": machine, "machine_text": describe(machine),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "images": len(films), "sanity": sanity(run, films, args.patches, args.seed, args.method)}
    if args.method == "cam" and args.agreement_images:
        from edgecxr.edge_runtime.data_location import resolve_data_dir

        test = sorted(p for p in (resolve_data_dir(args.data) / "test").rglob("*") if p.is_file())
        random.Random(args.seed).shuffle(test)
        chosen = [np.asarray(to_grayscale(open_image(p))) for p in test[:args.agreement_images]]
        result["cam_vs_occlusion"] = {"films": len(chosen), **agreement(run, chosen, args.patches)}
    print("cost per heat map:", flush=True)
    load_before = os.getloadavg()
    result["costs"] = costs(run, films[:args.timed_images], args.patches, args.threads, args.method)
    # Other jobs share the machine: the load says how much the timings are inflated.
    result["load_average_1min"] = {"before_costs": round(load_before[0], 2), "after_costs": round(os.getloadavg()[0], 2)}
    result["wall_s"] = round(time.perf_counter() - started, 1)
    name = Path(args.run).name + ("" if args.method == "occlusion" else f"_{args.method}")
    return publish(args.out, name, result, markdown(result))


if __name__ == "__main__":
    sys.exit(main())
