"""`edgecxr bench` (import-light: the workers load each runtime in their own process)."""

from __future__ import annotations

import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from .devices import DEVICES

# devices.py imports nothing heavy, so the CLI can list its devices at start-up.
Device = Enum("Device", {name: name for name in DEVICES}, type=str)
DATA, MEASUREMENT, OUTPUT = "Data", "Measurement", "Output"


def parse_int_list(text: str, option: str) -> list[int]:
    from edgecxr.edge_runtime.errors import EdgecxrError

    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise EdgecxrError(f"{option} takes comma-separated whole numbers, e.g. 1,2 (got {text!r})") from None
    if not values:
        raise EdgecxrError(f"{option} needs at least one value")
    return list(dict.fromkeys(values))


def bench(
    run: Path = typer.Argument(..., help="A run folder: its model.keras is the reference, RUN/export/ the artifacts."),
    data: Optional[Path] = typer.Option(None, help="Evaluation images: a Kaggle root (its test/ is used) or a folder "
                                        "with NORMAL/ and PNEUMONIA/. Default: the default data folder's test/.",
                                        rich_help_panel=DATA),
    max_images: Optional[int] = typer.Option(None, min=2, help="Evaluate on this many evenly spaced images only "
                                             "(quick checks; the figures are then not the full test set's).",
                                             rich_help_panel=DATA),
    device: Device = typer.Option(Device("cpu"), case_sensitive=False, help="Where the models run.",
                                  rich_help_panel=MEASUREMENT),
    threads: str = typer.Option("1", help="Thread counts to measure, comma-separated, e.g. 1,2.",
                                rich_help_panel=MEASUREMENT),
    formats: Optional[str] = typer.Option(None, help="Only these, comma-separated: tflite, onnx, tflite-int8, "
                                          "onnx-fp32, or a file name. The Keras reference always runs.",
                                          rich_help_panel=MEASUREMENT),
    batch_sizes: str = typer.Option("1,8", help="Batch sizes to time, comma-separated.",
                                    rich_help_panel=MEASUREMENT),
    warmup: int = typer.Option(10, min=0, help="Untimed calls before timing each batch size.",
                               rich_help_panel=MEASUREMENT),
    repeats: int = typer.Option(50, min=1, help="Timed calls per batch size.", rich_help_panel=MEASUREMENT),
    timeout: float = typer.Option(900.0, min=1.0, help="Seconds one model's worker may take before it is stopped.",
                                  rich_help_panel=MEASUREMENT),
    out: Optional[Path] = typer.Option(None, help="Output folder. Default: RUN/bench.", rich_help_panel=OUTPUT),
):
    """Every format side by side with the full Keras model: accuracy, fidelity, latency, cold start, memory."""
    from rich.console import Console

    from edgecxr.edge_runtime.data_location import resolve_data_dir
    from edgecxr.edge_runtime.console import console
    from edgecxr.train.dataset import evaluation_folder

    from .bench import BenchConfig, run_bench
    from .devices import get_device
    from .bench_report import failure_lines, rich_tables, verdict_lines

    get_device(device.value)  # an unsupported device fails before any work
    config = BenchConfig(
        run=run, data=evaluation_folder(resolve_data_dir(data)), device=device.value.lower(),
        threads=parse_int_list(threads, "--threads"), batch_sizes=parse_int_list(batch_sizes, "--batch-sizes"),
        formats=[f for f in formats.split(",") if f.strip()] if formats else None,
        warmup=warmup, repeats=repeats, max_images=max_images, timeout_s=timeout, out=out,
        command=shlex.join(["edgecxr", *sys.argv[1:]]),
    )
    result = run_bench(config)
    # Piped output (make demo | tee, CI logs) would otherwise be cut to 80 columns.
    table_console = console if console.is_terminal else Console(stderr=True, width=160)
    for table in rich_tables(result):
        table_console.print(table)
    for line in verdict_lines(result) + failure_lines(result):
        console.print(line, highlight=False, soft_wrap=True)
