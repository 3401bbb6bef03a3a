"""How a model holds up when its validation images are made to look like another site's.

Validation from train/ is the same hospital, scanner and processing as training, so it cannot
show how a model behaves on X-rays that look different; test/ can, but choosing anything on it
would make its numbers worthless. This scores a run on its own validation split under fixed,
named acquisition changes (exposure, contrast, blur, sharpening, noise, JPEG, resolution, field
of view), each applied to the decoded image before the run's own preprocessing, at the run's
stored threshold. A training change can then be judged by whether it keeps NORMAL children
NORMAL under these changes, without test/.

    python -m research.shift_stress runs/demo [runs/other ...] --out research/results/shift_stress

The changes are a guess at what differs between sites, not a measurement of it: a model that is
robust here is not proven robust elsewhere, and one trained on exactly these changes will look
better here than it is. The report says which changes a run's augmentation already covers.
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter


from edgecxr.benchmarks.bench_report import markdown_table
from edgecxr.edge_runtime.console import console

METRICS = ("roc_auc", "accuracy", "sensitivity", "specificity")
FIDELITY = ("agreement", "disagreements", "mean_abs_diff", "max_abs_diff")


@dataclass(frozen=True)
class Stress:
    name: str
    what: str
    apply: Callable[[Image.Image, int], Image.Image]  # (8-bit grayscale image, per-image seed)


def _gamma(value: float):
    table = [round(255 * (i / 255) ** value) for i in range(256)]
    return lambda image, seed: image.point(table)


def _contrast(factor: float):
    def apply(image, seed):
        pixels = np.asarray(image, dtype=np.float32)
        mean = pixels.mean()
        return Image.fromarray(np.clip((pixels - mean) * factor + mean, 0, 255).round().astype(np.uint8))
    return apply


def _noise(sigma: float):
    def apply(image, seed):
        pixels = np.asarray(image, dtype=np.float32)
        noisy = pixels + np.random.default_rng(seed).normal(0.0, sigma, pixels.shape)
        return Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8))
    return apply


def _jpeg(quality: int):
    def apply(image, seed):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("L")
    return apply


def _resolution(factor: float):
    def apply(image, seed):
        width, height = image.size
        small = image.resize((max(1, round(width * factor)), max(1, round(height * factor))), Image.Resampling.BILINEAR)
        return small.resize((width, height), Image.Resampling.BILINEAR)
    return apply


def _zoom_in(share: float):
    """A tighter collimation: the outer `share` of each edge is not on the film."""
    from edgecxr.edge_runtime.preprocessing import crop_edges

    return lambda image, seed: crop_edges(image, share).resize(image.size, Image.Resampling.BILINEAR)


def _zoom_out(share: float):
    """A wider field: the image shrinks inside a dark border of `share` of each edge."""
    def apply(image, seed):
        width, height = image.size
        dx, dy = round(width * share), round(height * share)
        canvas = Image.new("L", (width, height), 0)
        canvas.paste(image.resize((width - 2 * dx, height - 2 * dy), Image.Resampling.BILINEAR), (dx, dy))
        return canvas
    return apply


STRESSES = (
    Stress("clean", "the validation image as stored", lambda image, seed: image),
    Stress("gamma 0.6", "brighter exposure curve", _gamma(0.6)),
    Stress("gamma 1.6", "darker exposure curve", _gamma(1.6)),
    Stress("contrast 0.6", "contrast squeezed to 60 % around the mean", _contrast(0.6)),
    Stress("blur 1.5", "Gaussian blur, radius 1.5 px of 224", lambda image, seed: image.filter(ImageFilter.GaussianBlur(1.5))),
    Stress("sharpen", "unsharp mask, radius 2, 150 %", lambda image, seed: image.filter(ImageFilter.UnsharpMask(2, 150, 0))),
    Stress("noise 8", "Gaussian noise, sd 8 grey levels", _noise(8.0)),
    Stress("jpeg 15", "JPEG re-encoded at quality 15", _jpeg(15)),
    Stress("half resolution", "detector of half the resolution (down, then up)", _resolution(0.5)),
    Stress("zoom in 10 %", "tighter collimation, 10 % of each edge lost", _zoom_in(0.10)),
    Stress("zoom out 10 %", "wider field, 10 % dark border", _zoom_out(0.10)),
)


def stressed_pixels(paths: list[str], spec, stress: Stress) -> np.ndarray:
    """Decode, stress, then the run's own preprocessing; uint8 (N, H, W, C)."""
    from edgecxr.edge_runtime.images import open_image, to_grayscale
    from edgecxr.edge_runtime.preprocessing import to_pixels

    return np.stack([to_pixels(stress.apply(to_grayscale(open_image(path)), index), spec)
                     for index, path in enumerate(paths)])


def stress_rows(run_path: Path, stresses=STRESSES, artifact: str | None = None) -> list[dict]:
    """One row per stress: metrics at the run's threshold and the mean score of each class.

    With `artifact` (a file name in the run's export/ folder, e.g. model_int8.tflite, or an absolute
    path) each row also says how often that artifact gives the Keras model's label on the stressed
    images: int8 drift shows on images near the threshold, and stressed images put more of them
    there, as test/ does.
    """
    from edgecxr.convert.fidelity import compare
    from edgecxr.edge_runtime.run_folder import RunFolder
    from edgecxr.edge_runtime.console import progress_bar
    from edgecxr.edge_runtime.errors import EdgecxrError
    from edgecxr.edge_runtime.metrics import binary_metrics
    from edgecxr.edge_runtime.preprocessing import scale_pixels
    from edgecxr.edge_runtime.batching import predict_in_batches
    from edgecxr.train.keras_backend import open_any_model

    run = RunFolder.open(run_path)
    model = open_any_model(run.model_path)
    spec, threshold = model.metadata.preprocessing, model.metadata.threshold
    exported = open_any_model(run.path / "export" / artifact, threads=2) if artifact else None
    if exported is not None and exported.metadata.preprocessing != spec:
        raise EdgecxrError(f"{artifact} does not use {run_path}'s preprocessing; re-export it")
    samples = run.split("validation")
    paths = [str(s.path) for s in samples]
    labels = np.array([s.label for s in samples])
    rows = []
    with progress_bar() as progress:
        task = progress.add_task(f"stressing {run_path}", total=len(stresses))
        for stress in stresses:
            inputs = scale_pixels(stressed_pixels(paths, spec, stress).astype(np.float32), spec)
            probs = predict_in_batches(model.predict_proba, inputs)
            metrics = binary_metrics(labels, probs, threshold)
            row = {"stress": stress.name, **{k: metrics[k] for k in METRICS},
                   "mean_p_normal": float(probs[labels == 0].mean()),
                   "mean_p_pneumonia": float(probs[labels == 1].mean())}
            if exported is not None:
                fidelity = compare(probs, predict_in_batches(exported.predict_proba, inputs), None, threshold)
                row.update({key: fidelity[key] for key in FIDELITY})
            rows.append(row)
            progress.advance(task)
    return rows


def shifted_summary(rows: list[dict]) -> dict:
    """Means over the stressed rows (everything but clean), the figures a comparison quotes."""
    shifted = [row for row in rows if row["stress"] != "clean"]
    summary = {key: float(np.mean([row[key] for row in shifted])) for key in (*METRICS, "mean_p_normal")}
    if "agreement" in shifted[0]:
        summary["disagreements"] = int(sum(row["disagreements"] for row in shifted))
        summary["mean_abs_diff"] = float(np.mean([row["mean_abs_diff"] for row in shifted]))
        summary["agreement"] = float(np.mean([row["agreement"] for row in shifted]))
    return summary


def markdown(run: str, rows: list[dict], artifact: str | None = None) -> str:
    fidelity = "agreement" in rows[0]
    headers = ["stress", "AUC", "accuracy", "sensitivity", "specificity", "mean p NORMAL", "mean p PNEUMONIA"]
    if fidelity:
        headers += [f"{artifact} same label as Keras", "differ", "mean abs dp"]
    table = []
    for row in rows:
        cells = [row["stress"], *(f"{row[key]:.3f}" for key in ("roc_auc", "accuracy", "sensitivity", "specificity",
                                                                 "mean_p_normal", "mean_p_pneumonia"))]
        if fidelity:
            cells += [f"{row['agreement']:.2%}", row["disagreements"], f"{row['mean_abs_diff']:.4f}"]
        table.append(cells)
    mean = shifted_summary(rows)
    cells = ["**mean of stressed**",
             *(f"{mean[key]:.3f}" for key in ("roc_auc", "accuracy", "sensitivity", "specificity", "mean_p_normal")), ""]
    if fidelity:
        cells += [f"{mean['agreement']:.2%}", f"{mean['disagreements']} (sum)", f"{mean['mean_abs_diff']:.4f}"]
    table.append(cells)
    return "\n".join([f"### {run}", "", *markdown_table(headers, table)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=Path("research/results/shift_stress"))
    parser.add_argument("--artifact", help="also compare this file of each run's export/ folder with its Keras "
                                           "model under every stress, e.g. model_int8.tflite")
    parser.add_argument("--name", default="shift_stress", help="results file stem")
    args = parser.parse_args(argv)

    from edgecxr.benchmarks.machine import describe, machine_info
    from edgecxr.edge_runtime.atomic import write_json_atomic, write_text_atomic

    machine = machine_info()
    results = {str(run): stress_rows(run, artifact=args.artifact) for run in args.runs}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / f"{args.name}.json", {
        "runs": results, "summary": {run: shifted_summary(rows) for run, rows in results.items()},
        "stresses": {s.name: s.what for s in STRESSES}, "artifact": args.artifact, "machine": machine})
    text = (f"Validation split of each run under acquisition changes, at the run's own threshold "
            f"({machine['date']}, {describe(machine)}).\n\n"
            + "\n".join(markdown(r, rows, args.artifact) for r, rows in results.items()))
    write_text_atomic(args.out / f"{args.name}.md", text)
    console.print(text, highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
