"""`edgecxr bench` end to end: discover models, run the workers, build rows, write the results."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.atomic import write_json_atomic, write_text_atomic
from edgecxr.edge_runtime.console import console, progress_bar, warn
from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.folders import LABELS, labelled_images

from . import artifacts, bench_report, machine
from .devices import get_device
from .rows import build_rows
from .runner import WorkerRun, WorkerSettings, run_worker, write_image_list

SCHEMA = "edgecxr.bench/1"
JSON_FILE = "bench.json"
MARKDOWN_FILE = "bench.md"

DEFINITIONS = {
    "size_mb": "model file size in MiB (2^20 bytes)",
    "parameters": "trainable and non-trainable parameters of the network (the same for every format)",
    "accuracy..roc_auc": "on the evaluation images at the model's stored threshold (PNEUMONIA positive)",
    "agreement": "share of images given the same label as the Keras model at the stored threshold",
    "max_abs_diff, mean_abs_diff": "absolute difference from the Keras model's P(PNEUMONIA)",
    "latency_ms_p50, latency_ms_p95": "one inference call on batch_size preprocessed images already in memory "
                                      "(preprocessing excluded), after `warmup` untimed calls, over `repeats` "
                                      "timed calls, time.perf_counter (monotonic)",
    "latency_ms_per_image": "latency_ms_p50 / batch_size",
    "throughput_ips": "batch_size / median call time, images per second",
    "spread_wide": "latency_ms_p95 > 2 x latency_ms_p50: the figures are noisy (busy machine)",
    "preprocess_ms_p50": "decode one image file and apply the shared preprocessing, timed separately",
    "cold_start_s": "wall time from spawning a fresh `python -m edgecxr.benchmarks.worker` process to its "
                    "first prediction: interpreter start, imports, metadata sha256 check, model load, "
                    "preprocessing of one image, one prediction",
    "peak_rss_mb": "peak resident memory (getrusage ru_maxrss) of that process at its first prediction",
    "peak_rss_mb_end": "peak resident memory after predicting every image and the latency runs",
    "speedup_vs_keras_predict": "Keras predict latency_ms_p50 / this row's, same threads and batch size",
    "cold_start_speedup_vs_keras, memory_reduction_vs_keras": "Keras cold_start_s / this row's, Keras "
                                                              "peak_rss_mb / this row's",
    "mode": "predict = keras Model.predict, call = model(x) direct call, invoke = edge runtime backend",
    "status": "ok (✅ ran, verified by edgecxr convert), unverified (❎ ran, not verified), "
              "failed (❌ could not be exported, loaded or run; see reason)",
}


@dataclass
class BenchConfig:
    run: Path
    data: Path  # a folder with NORMAL/ and PNEUMONIA/ subfolders
    device: str = "cpu"
    threads: list[int] = field(default_factory=lambda: [1])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    formats: list[str] | None = None
    warmup: int = 10
    repeats: int = 50
    max_images: int | None = None
    timeout_s: float = 900.0
    out: Path | None = None
    command: str = ""

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out is not None else Path(self.run) / "bench"

    def validate(self) -> None:
        get_device(self.device)
        for name, values in (("--threads", self.threads), ("--batch-sizes", self.batch_sizes)):
            if not values or any(v < 1 for v in values):
                raise EdgecxrError(f"{name} must list whole numbers of at least 1, e.g. 1,2")
        if self.repeats < 1 or self.warmup < 0:
            raise EdgecxrError("--repeats must be at least 1 and --warmup at least 0")
        if self.max_images is not None and self.max_images < 2:
            raise EdgecxrError("--max-images must be at least 2 (one per class)")


def evaluation_images(config: BenchConfig) -> tuple[list[str], np.ndarray]:
    """Image paths and labels; --max-images takes evenly spaced images so both classes stay in."""
    samples = labelled_images(config.data)
    if config.max_images is not None and config.max_images < len(samples):
        picks = np.unique(np.linspace(0, len(samples) - 1, config.max_images).round().astype(int))
        samples = [samples[i] for i in picks]
    return [str(s.path) for s in samples], np.array([s.label for s in samples], dtype=np.int64)


def run_workers(candidates: list[artifacts.Candidate], config: BenchConfig, images_file: Path,
                workdir: Path) -> list[WorkerRun]:
    settings = WorkerSettings(config.device, config.warmup, config.repeats, config.batch_sizes, config.timeout_s)
    jobs = [(c, t) for t in config.threads for c in candidates]
    runs = []
    with progress_bar() as progress:
        task = progress.add_task("benchmarking", total=len(jobs))
        for candidate, threads in jobs:
            progress.update(task, description=f"benchmarking {candidate.name} ({threads} thread{'s' * (threads > 1)})")
            runs.append(run_worker(candidate, threads, images_file, workdir, settings))
            progress.advance(task)
    return runs


def run_bench(config: BenchConfig) -> dict:
    """Benchmark every model of the run; returns the bench.json content (also written to disk)."""
    config.validate()
    candidates = artifacts.select(artifacts.discover(config.run), config.formats)
    if not (Path(config.run) / artifacts.EXPORT_DIR).is_dir():
        warn(f"{config.run} has no {artifacts.EXPORT_DIR}/ folder: only the Keras model is benchmarked "
             f"(export first: edgecxr convert {config.run} --quantize all)")
    paths, labels = evaluation_images(config)
    machine_info = machine.machine_info()
    runnable = [c for c in candidates if c.runnable]
    with tempfile.TemporaryDirectory(prefix="edgecxr-bench-") as workdir:
        images_file = write_image_list(paths, Path(workdir) / "images.json")
        runs = run_workers(runnable, config, images_file, Path(workdir))
    machine_info["load_average_at_end"] = machine.load_average()
    rows = build_rows(runs, [c for c in candidates if not c.runnable], labels)
    result = {
        "schema": SCHEMA,
        "command": config.command,
        "run": str(config.run),
        "reference": artifacts.MODEL_FILE,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info,
        "settings": {
            "device": config.device, "threads": config.threads, "batch_sizes": config.batch_sizes,
            "warmup": config.warmup, "repeats": config.repeats, "formats": config.formats,
            "max_images": config.max_images, "timeout_s": config.timeout_s,
        },
        "data": {
            "folder": str(config.data),
            "n_images": len(paths),
            "per_class": {label: int(np.sum(labels == i)) for i, label in enumerate(LABELS)},
            "subset": config.max_images is not None,
        },
        "definitions": DEFINITIONS,
        "rows": rows,
    }
    result["summary"] = bench_report.summary(result)
    write_results(result, config.out_dir)
    return result


def write_results(result: dict, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    write_json_atomic(out_dir / JSON_FILE, result)
    write_text_atomic(out_dir / MARKDOWN_FILE, bench_report.markdown(result))
    try:
        from . import bench_plots
    except ImportError:
        warn("matplotlib is not installed: no bench plots (pip install 'edgecxr[train]')")
        return
    bench_plots.plot_latency_vs_accuracy(result["rows"], out_dir / "latency_vs_accuracy.png")
    bench_plots.plot_size_per_format(result["rows"], out_dir / "size_per_format.png")
    console.print(f"results written to {out_dir}/ ({JSON_FILE}, {MARKDOWN_FILE}, PNG plots)", highlight=False)
