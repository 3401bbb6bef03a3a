"""`edgecxr bundle`: the offline install archive for a clinic machine (bundle.py does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def bundle(
    run_or_model: Path = typer.Argument(..., help="A run folder, its export/ folder, or one .tflite/.onnx "
                                        "model with its metadata."),
    platform: str = typer.Option("aarch64", help="Target machine: aarch64 (Raspberry Pi OS 64-bit) or "
                                 "x86_64. armv7l has no runtime wheels."),
    python: str = typer.Option("3.11", help="Target Python (Raspberry Pi OS Bookworm: 3.11)."),
    out: Path = typer.Option(Path("."), help="Folder for the .tar.gz."),
    formats: str = typer.Option(",".join(("tflite-int8",)), help="From a run or export folder: comma-"
                                "separated models, e.g. tflite-int8,onnx-fp32."),
    tflite_runtime: str = typer.Option("litert", help="litert, or tflite-runtime (2.14 with numpy<2)."),
    find_links: Optional[Path] = typer.Option(None, help="Take the wheels from this folder only, not "
                                              "from PyPI."),
):
    """Build one archive that installs edgecxr and a model with no network: every wheel for the
    target, the model and its metadata, a sha256 manifest, install.sh, a service file and a
    README for clinic IT."""
    from .bundle import BundleOptions, build_bundle
    from .console import console

    result = build_bundle(BundleOptions(source=run_or_model, platform=platform, python=python, out=out,
                                        formats=tuple(f.strip() for f in formats.split(",") if f.strip()),
                                        tflite_runtime=tflite_runtime, find_links=find_links))
    extras = f", extras: {', '.join(result.extras)}" if result.extras else ""
    console.print(f"{result.archive}: {', '.join(result.models)}, {len(result.wheels)} wheels{extras}",
                  highlight=False, soft_wrap=True)
