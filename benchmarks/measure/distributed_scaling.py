"""Wall time of training one epoch: one process, and 1 or 2 workers on 127.0.0.1.

    python -m edgecxr.benchmarks.measure.distributed_scaling                 # compact CNN: none, 1 worker, 2 workers
    python -m edgecxr.benchmarks.measure.distributed_scaling --epochs 1 --workers 2
    python -m edgecxr.benchmarks.measure.distributed_scaling --arch efficientnet_lite0 --epochs 2 -- --strategy feature-extract

Anything after `--` is passed to `edgecxr train` as is. For an ImageNet backbone the time that counts
is the frozen-backbone activation cache (each worker computes its own shard's), which
`train_seconds` includes; the head's epochs are short.

Each worker is `edgecxr train --distribute multi-worker` with its own TF_CONFIG (free local ports)
and one TensorFlow thread ($EDGECXR_TF_THREADS=1), so that the workers share the machine's cores
instead of each claiming all of them. On one machine this proves the path, not the scaling: the
workers split the same cores and add an all-reduce per step. docs/distributed.md estimates the
scaling on N machines. Results land in benchmarks/results/distributed/ with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from edgecxr.edge_runtime.data_location import resolve_data_dir
from edgecxr.edge_runtime.run_folder import METRICS_FILE
from edgecxr.edge_runtime.python_command import python_module

from ..machine import describe, machine_info
from .published import publish
from ..bench_report import markdown_table


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (held together while chosen, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for held in sockets:
            held.bind(("127.0.0.1", 0))
        return [held.getsockname()[1] for held in sockets]
    finally:
        for held in sockets:
            held.close()


def tf_configs(count: int) -> list[str]:
    """One TF_CONFIG per worker of a local cluster; worker 0 is the chief."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(count)]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(count)]


def start_workers(train_args: list[str], count: int, logs: Path, env: dict | None = None) -> list[subprocess.Popen]:
    """`edgecxr train --distribute multi-worker ARGS` once per worker, each logging to logs/workerI.log."""
    logs.mkdir(parents=True, exist_ok=True)
    processes = []
    for index, config in enumerate(tf_configs(count)):
        worker_env = {**os.environ, **(env or {}), "TF_CONFIG": config, "EDGECXR_TF_THREADS": "1",
                      "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "200"}
        with (logs / f"worker{index}.log").open("w") as log:
            processes.append(subprocess.Popen(
                [*python_module("edgecxr.cli"), "train", *train_args, "--distribute", "multi-worker"],
                stdout=log, stderr=subprocess.STDOUT, env=worker_env))
    return processes


def stop(processes: list[subprocess.Popen]) -> None:
    """Kill whatever is still running among `processes` (stragglers of a failed run)."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()


def run_once(data: Path, out: Path, workers: int, epochs: int, batch_size: int, logs: Path, arch: str = "compact",
             extra: list[str] | None = None) -> dict:
    args = ["--data", str(data), "--out", str(out), "--epochs", str(epochs), "--batch-size", str(batch_size),
            "--arch", arch, *(extra or []),
            "--overwrite"]
    logs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if workers == 0:
        with (logs / "none.log").open("w") as log:
            processes = [subprocess.Popen([*python_module("edgecxr.cli"), "train", *args],
                                          stdout=log, stderr=subprocess.STDOUT,
                                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "200"})]
    else:
        processes = start_workers(args, workers, logs / f"workers{workers}")
    try:
        codes = [process.wait() for process in processes]
    finally:
        stop(processes)
    wall = time.perf_counter() - started
    metrics = json.loads((out / METRICS_FILE).read_text()) if all(c == 0 for c in codes) else {}
    return {"workers": workers, "mode": "none" if workers == 0 else "multi-worker", "exit_codes": codes,
            "wall_seconds": round(wall, 1), "train_seconds": metrics.get("train_seconds"),
            "epoch_seconds": round(metrics["train_seconds"] / metrics["epochs_run"], 1) if metrics else None,
            "global_batch": batch_size * max(workers, 1),
            "val_auc": metrics.get("validation", {}).get("roc_auc"), "arch": arch, "train_options": extra or []}


def markdown(result: dict) -> str:
    rows = [[r["mode"], str(r["workers"] or "-"), "1 each" if r["workers"] else "TF default (all cores)",
             str(r["global_batch"]), f"{r['epoch_seconds']} s",
             f"{r['wall_seconds']} s", f"{r['val_auc']:.3f}" if r["val_auc"] is not None else "failed"]
            for r in result["runs"]]
    return "\n".join([
        f"# Training {result.get('arch', 'compact')}, one process against 1 and 2 local workers", "",
        f"Machine: {result['machine_text']}. Date: {result['date']}. Command: `{result['command']}`. "
        "Shared machine: other jobs ran at the same time, so the times are upper bounds.", "",
        *markdown_table(["mode", "workers", "TF threads", "global batch", "train time / epoch", "command wall",
                         "val AUC"], rows, left=3), "",
        "Train time is `train_seconds` of the run (strategy set-up, tracing, the epoch and its validation; for "
        "an ImageNet backbone also the frozen-backbone activation cache, the bulk of it, spread over the epochs); "
        "command wall adds start-up and decoding (each worker decodes only its shard of train/).", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="Kaggle-layout folder (default as edgecxr train)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32, help="per replica")
    parser.add_argument("--workers", default="0,1,2", help="comma list; 0 = --distribute none")
    parser.add_argument("--runs", type=Path, default=Path("runs/distributed-bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/distributed"))
    parser.add_argument("--arch", default="compact")
    parser.add_argument("train_options", nargs="*", help="after --: more `edgecxr train` options")
    args = parser.parse_args(argv)
    data = resolve_data_dir(args.data)
    runs = []
    for workers in (int(w) for w in args.workers.split(",")):
        out = args.runs / f"workers{workers}"
        row = run_once(data, out, workers, args.epochs, args.batch_size, args.runs / "logs", args.arch,
                       args.train_options)
        print(f"  {workers} worker(s): {row}", file=sys.stderr, flush=True)
        runs.append(row)
    machine = machine_info()
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python -m edgecxr.benchmarks.measure.distributed_scaling " + " ".join(argv or sys.argv[1:]),
              "machine": machine, "machine_text": describe(machine), "arch": args.arch, "runs": runs}
    name = "distributed" if args.arch == "compact" else f"distributed-{args.arch}"
    publish(args.out, name, result, markdown(result))
    return 0 if all(set(r["exit_codes"]) == {0} for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
