"""One model, one thread count, in a fresh process: `python -m edgecxr.benchmarks.worker ...`.

The parent (runner.py) starts one worker per (model, threads) so that one runtime's imports and
memory never pollute another's figures. The worker

1. opens the model (a TFLite/ONNX artifact through the edge runtime only, with no TensorFlow
   import; or the Keras reference through TensorFlow),
2. preprocesses the first readable image and predicts it, then prints FIRST_PREDICTION_MARKER
   on stdout: the parent's cold-start clock stops when it reads that line,
3. preprocesses every evaluation image with the shared preprocessing (timed per image),
4. predicts them all (probabilities saved for the parent's metrics and fidelity),
5. times inference alone on already-preprocessed batches, after warm-up, with a monotonic clock,
6. writes result.json (and probabilities.npy) into --out.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.batching import predict_in_batches
from edgecxr.edge_runtime.versions import package_version

FIRST_PREDICTION_MARKER = "EDGECXR_BENCH_FIRST_PREDICTION"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def timing_summary(seconds: list[float], batch_size: int) -> dict:
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50 = float(np.median(ms))
    p95 = float(np.percentile(ms, 95))
    return {
        "batch_size": batch_size,
        "repeats": len(ms),
        "latency_ms_p50": p50,
        "latency_ms_p95": p95,
        "latency_ms_mean": float(ms.mean()),
        "latency_ms_min": float(ms.min()),
        "latency_ms_max": float(ms.max()),
        "latency_ms_per_image": p50 / batch_size,
        "throughput_ips": batch_size * 1000.0 / p50 if p50 > 0 else float("inf"),
    }


def time_inference(predict, inputs: np.ndarray, batch_size: int, warmup: int, repeats: int) -> dict:
    """Latency of `predict` on one batch of preprocessed inputs: inference only, after warm-up."""
    indices = np.arange(batch_size) % len(inputs)
    batch = np.ascontiguousarray(inputs[indices])
    for _ in range(warmup):
        predict(batch)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(batch)
        seconds.append(time.perf_counter() - start)
    return timing_summary(seconds, batch_size)


class KerasModel:
    """The full Keras model; `predict` and the direct call are timed separately."""

    format = "keras"

    def __init__(self, path: Path, device, threads: int):
        import importlib.util

        from edgecxr.edge_runtime.errors import MissingDependencyError

        if importlib.util.find_spec("tensorflow") is None:
            # An edge-only install (the Pi) benchmarks its artifacts without the reference.
            raise MissingDependencyError("TensorFlow is not installed: the Keras reference needs "
                                         "pip install 'edgecxr[train]'")
        device.configure_tensorflow(threads)
        from edgecxr.train.keras_backend import KerasBackend

        self.backend = KerasBackend(path)
        self.metadata = self.backend.metadata
        self.runtime = "tensorflow"
        self.parameters = int(self.backend.model.count_params())

    def predict_proba(self, inputs: np.ndarray) -> np.ndarray:
        return self.backend.predict_proba(inputs)

    def prepare(self, path):
        from edgecxr.edge_runtime.preprocessing import preprocess

        return preprocess(path, self.metadata.preprocessing)

    def modes(self) -> dict:
        model = self.backend.model
        return {
            "predict": lambda x: model.predict(x, verbose=0),
            "call": lambda x: model(x, training=False),
        }

    def versions(self) -> dict:
        found = {name: package_version(name) for name in ("tensorflow", "tensorflow-cpu", "keras")}
        return {name: version for name, version in found.items() if version}


class EdgeModel:
    """A TFLite or ONNX artifact through the edge runtime's own backends (what the Pi runs)."""

    def __init__(self, path: Path, device, threads: int):
        self.backend = device.open_edge_model(path, threads)
        self.metadata = self.backend.metadata
        self.format = self.backend.format
        self.runtime = self.backend.runtime
        self.parameters = None

    def predict_proba(self, inputs: np.ndarray) -> np.ndarray:
        return self.backend.predict_proba(inputs)

    def prepare(self, path):
        return self.backend.prepare(path)

    def modes(self) -> dict:
        return {"invoke": self.backend.predict_proba}

    def versions(self) -> dict:
        return {self.runtime: package_version(self.runtime)}


def open_model(path: Path, device, threads: int):
    if path.suffix == ".keras":
        return KerasModel(path, device, threads)
    return EdgeModel(path, device, threads)


def preprocess_all(paths: list[str], spec, prepare=None) -> tuple[np.ndarray, list[int], list[dict], list[float]]:
    """Inputs for every readable image, their indices, the skipped files, and per-image seconds.
    `prepare(path)`: the backend's own (a frame for the mobile graph); else `preprocess` with `spec`."""
    from edgecxr.edge_runtime.errors import ImageError
    from edgecxr.edge_runtime.preprocessing import preprocess

    inputs, kept, skipped, seconds = [], [], [], []
    for index, path in enumerate(paths):
        start = time.perf_counter()
        try:
            array = prepare(path) if prepare is not None else preprocess(path, spec)
        except ImageError as exc:
            skipped.append({"path": path, "reason": str(exc)})
            continue
        seconds.append(time.perf_counter() - start)
        inputs.append(array)
        kept.append(index)
    if not inputs:
        raise RuntimeError("none of the evaluation images could be read")
    stacked = np.stack(inputs)  # uint8 frames stay uint8; preprocessed inputs are float32 already
    return (stacked if stacked.dtype == np.uint8 else stacked.astype(np.float32)), kept, skipped, seconds


def first_prediction(model, paths: list[str]) -> tuple[int, float, float]:
    """Preprocess and predict the first readable image: (index, preprocess seconds, predict seconds)."""
    from edgecxr.edge_runtime.errors import ImageError
    from edgecxr.edge_runtime.preprocessing import preprocess

    for index, path in enumerate(paths):
        start = time.perf_counter()
        try:
            array = model.prepare(path)
        except ImageError:
            continue
        preprocessed = time.perf_counter()
        model.predict_proba(array[None])
        return index, preprocessed - start, time.perf_counter() - preprocessed
    raise RuntimeError("none of the evaluation images could be read")


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    from edgecxr.benchmarks.devices import get_device

    stage = "load"
    result: dict = {"model": str(args.model), "threads": args.threads, "device": args.device}
    try:
        device = get_device(args.device)
        model = open_model(Path(args.model), device, args.threads)
        loaded = time.perf_counter()
        result.update(format=model.format, runtime=model.runtime, runtime_versions=model.versions(),
                      parameters=model.parameters, load_s=loaded - started)

        stage = "first prediction"
        paths = json.loads(Path(args.images).read_text(encoding="utf-8"))["paths"]
        _, preprocess_s, predict_s = first_prediction(model, paths)
        print(FIRST_PREDICTION_MARKER, flush=True)
        result.update(first_preprocess_ms=preprocess_s * 1000, first_predict_ms=predict_s * 1000,
                      worker_to_first_prediction_s=time.perf_counter() - started,
                      peak_rss_mb_first_prediction=peak_rss_mb())

        stage = "preprocessing"
        inputs, kept, skipped, seconds = preprocess_all(paths, model.metadata.preprocessing, model.prepare)
        ms = np.asarray(seconds) * 1000
        result.update(kept=kept, skipped=skipped, preprocess_ms_p50=float(np.median(ms)),
                      preprocess_ms_p95=float(np.percentile(ms, 95)))

        stage = "evaluation"
        probabilities = predict_in_batches(model.predict_proba, inputs)
        if not np.all(np.isfinite(probabilities)):
            raise RuntimeError("the model returned non-finite probabilities")
        np.save(Path(args.out) / "probabilities.npy", probabilities)

        stage = "latency"
        result["latency"] = {
            mode: [time_inference(predict, inputs, batch_size, args.warmup, args.repeats)
                   for batch_size in args.batch_sizes]
            for mode, predict in model.modes().items()
        }
        result.update(ok=True, peak_rss_mb_end=peak_rss_mb())
    except Exception as exc:  # noqa: BLE001 - any failure becomes a row with its reason, never a crash
        from edgecxr.edge_runtime.errors import EdgecxrError

        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if not isinstance(exc, EdgecxrError):
            reason = f"{type(exc).__name__}: {reason}"
            traceback.print_exc(file=sys.stderr)
        result.update(ok=False, stage=stage, error=reason)
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m edgecxr.benchmarks.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", required=True, help='JSON file {"paths": [...]}')
    parser.add_argument("--out", required=True, help="folder for result.json and probabilities.npy")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[1])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    result = run(args)
    out = Path(args.out) / "result.json"
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
