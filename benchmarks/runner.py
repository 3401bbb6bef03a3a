"""Run one worker process per (model, threads) and collect what each one measured.

Cold start is measured here, from outside the worker: the clock starts just before the parent
spawns `python -m edgecxr.benchmarks.worker` and stops when the parent reads the worker's
first-prediction line on its stdout. It therefore covers interpreter start, imports, reading and
sha256-checking the metadata, loading the model, decoding and preprocessing one image and one
prediction: what a fresh process on the edge pays before its first answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.python_command import python_module

from .artifacts import Candidate
from .worker import FIRST_PREDICTION_MARKER

# Numeric libraries size their own thread pools from these; pinning them keeps "1 thread" honest.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class WorkerSettings:
    device: str = "cpu"
    warmup: int = 10
    repeats: int = 50
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    timeout_s: float = 900.0


@dataclass
class WorkerRun:
    """What one worker reported, plus what the parent measured around it."""

    candidate: Candidate
    threads: int
    result: dict
    probabilities: np.ndarray | None
    cold_start_s: float | None
    wall_s: float

    @property
    def ok(self) -> bool:
        return bool(self.result.get("ok")) and self.probabilities is not None


def worker_command(candidate: Candidate, threads: int, images_file: Path, out: Path, settings: WorkerSettings) -> list[str]:
    return [
        *python_module("edgecxr.benchmarks.worker"),
        "--model", str(Path(candidate.path).resolve()),
        "--images", str(images_file),
        "--out", str(out),
        "--device", settings.device,
        "--threads", str(threads),
        "--warmup", str(settings.warmup),
        "--repeats", str(settings.repeats),
        "--batch-sizes", ",".join(str(b) for b in settings.batch_sizes),
    ]


def worker_env(threads: int) -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in THREAD_ENV_VARS:
        env[name] = str(threads)
    return env


def last_lines(path: Path, count: int = 3) -> str:
    try:
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-count:])


def run_worker(candidate: Candidate, threads: int, images_file: Path, workdir: Path,
               settings: WorkerSettings) -> WorkerRun:
    out = workdir / f"{candidate.name}-t{threads}"
    out.mkdir(parents=True, exist_ok=True)
    stderr_path = out / "stderr.txt"
    marker_seen: list[float] = []

    def watch_stdout(stream) -> None:
        for line in stream:
            if line.strip() == FIRST_PREDICTION_MARKER and not marker_seen:
                marker_seen.append(time.perf_counter())

    timed_out = False
    with stderr_path.open("wb") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(worker_command(candidate, threads, images_file, out, settings),
                                   stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
                                   text=True, env=worker_env(threads))
        reader = threading.Thread(target=watch_stdout, args=(process.stdout,), daemon=True)
        reader.start()
        try:
            process.wait(timeout=settings.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            process.kill()
            process.wait()
        wall_s = time.perf_counter() - started
        reader.join(timeout=5)

    result_path = out / "result.json"
    if timed_out:
        result = {"ok": False, "stage": "timeout", "error": f"no result within {settings.timeout_s:g} s"}
    elif result_path.is_file():
        result = json.loads(result_path.read_text(encoding="utf-8"))
    else:
        result = {"ok": False, "stage": "start",
                  "error": f"worker exited with code {process.returncode}: {last_lines(stderr_path) or 'no output'}"}
    probabilities_path = out / "probabilities.npy"
    probabilities = np.load(probabilities_path) if result.get("ok") and probabilities_path.is_file() else None
    cold_start_s = marker_seen[0] - started if marker_seen else None
    return WorkerRun(candidate, threads, result, probabilities, cold_start_s, wall_s)


def write_image_list(paths: list[str], target: Path) -> Path:
    target.write_text(json.dumps({"paths": [str(Path(p).resolve()) for p in paths]}), encoding="utf-8")
    return target
