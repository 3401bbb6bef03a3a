"""`edgecxr convert` (import-light: TensorFlow loads only when it runs)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from .plan import FORMAT_CHOICES, QUANTIZE_CHOICES


# plan.py holds the choices and imports nothing heavy, so the CLI can list them at start-up.
Quantize = Enum("Quantize", {choice: choice for choice in QUANTIZE_CHOICES}, type=str)
Format = Enum("Format", {choice: choice for choice in FORMAT_CHOICES}, type=str)
assert QUANTIZE_CHOICES[-1] == "all"  # the --quantize help text says so


class BiasCorrection(str, Enum):
    """bias_correction.MODES, listed here because that module loads numpy (tests/test_cli_help.py
    checks that the two agree)."""

    off = "off"
    logit = "logit"
    layers = "layers"


ARTIFACTS, CHECKS, OUTPUT = "Artifacts", "Calibration and verification", "Output"


def convert(
    run: Path = typer.Argument(..., help="A run folder from edgecxr train (model.keras, its metadata, split.json)."),
    quantize: Quantize = typer.Option(Quantize("int8"), metavar="<name>", help=", ".join(
        QUANTIZE_CHOICES[:-1]) + " or all (every combination). Each quantized model comes with its fp32 reference "
        "in the same format.", rich_help_panel=ARTIFACTS),
    format: Format = typer.Option(Format("all"), "--format", metavar="<name>", help=", ".join(
        FORMAT_CHOICES[:-1]) + " or all: the file formats to write (mobile: the phone model, preprocessing inside; "
        "ort: ORT Mobile's format).", rich_help_panel=ARTIFACTS),
    opset: int = typer.Option(17, min=13, help="ONNX opset.", rich_help_panel=ARTIFACTS),
    bias_correction: BiasCorrection = typer.Option(
        BiasCorrection.layers, help="int8 only. logit: shift the final logit so the int8 model's mean logit on the "
        "calibration images equals the Keras model's. layers: first compensate every convolution's weight "
        "rounding per channel, then the logit.", rich_help_panel=ARTIFACTS),
    calibration_data: Optional[Path] = typer.Option(None, help="int8 calibration images: a folder with NORMAL/ "
                                                    "and PNEUMONIA/ or a Kaggle root (its train/). Default: the "
                                                    "run's training split. test/ is refused.",
                                                    rich_help_panel=CHECKS),
    calibration_size: int = typer.Option(300, min=1, help="Calibration images (stratified by class, seeded).",
                                         rich_help_panel=CHECKS),
    verify_size: int = typer.Option(500, min=1, help="Validation-split images each artifact is verified on.",
                                    rich_help_panel=CHECKS),
    seed: int = typer.Option(42, help="Seed for choosing calibration and verification images.",
                             rich_help_panel=CHECKS),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check each artifact against the Keras "
                                "model (experts only: --no-verify publishes unchecked files).",
                                rich_help_panel=CHECKS),
    out: Optional[Path] = typer.Option(None, help="Output folder. Default: RUN/export.", rich_help_panel=OUTPUT),
):
    """Export a trained run to TFLite and ONNX (fp32, fp16, dynamic, int8), each verified against Keras."""
    from edgecxr.edge_runtime.extras import require_extra

    require_extra("convert")
    from edgecxr.edge_runtime.console import console, warn
    from edgecxr.edge_runtime.errors import EdgecxrError

    from .exporter import ConvertOptions, convert_run, failure_message
    from .verify import verification_table

    options = ConvertOptions(run=run, quantize=quantize.value, format=format.value,
                             calibration_data=calibration_data, calibration_size=calibration_size, verify=verify,
                             verify_size=verify_size, opset=opset, seed=seed, out=out,
                             bias_correction=bias_correction.value)
    results = convert_run(options)
    console.print(verification_table([r.to_dict() for r in results]))
    for result in results:
        correction = result.bias_correction
        if correction and result.status != "failed":
            layers = (f"{correction['corrected_convolutions']} convolutions corrected per channel; "
                      if "corrected_convolutions" in correction else "")
            console.print(f"{result.name}: {layers}" + (
                f"int8 logit shifted by {correction['logit_shift']:+.4f} (mean gap on "
                f"{correction['unsaturated_calibration_images']} calibration images)" if correction["applied"]
                else f"logit not shifted: {correction['why']}"), highlight=False)
    gate = next((r.input_gate for r in results if r.input_gate), None)
    if gate is not None:
        console.print(f"input gate: {gate_line(gate)}", highlight=False)
    if not verify:
        warn("--no-verify: the artifacts were not checked against the Keras model")
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise EdgecxrError(failure_message(failed))
    console.print(f"[green]exported[/green] {len(results)} artifact(s) to {options.out_dir}", highlight=False)


def gate_line(gate: dict) -> str:
    """One line on the feature reference the artifacts carry (see exporter.attach_feature_reference)."""
    from edgecxr.edge_runtime.feature_reference import (MIN_REFERENCE_IMAGES, REFUSAL_RATE, SPACES,
                                                       min_calibration_images)

    if "refusal_thresholds" not in gate:
        return f"no learned check or site monitor ({gate['learned_check']})"
    n = gate["n_calibration_images"]
    if any(threshold is None for threshold in gate["refusal_thresholds"].values()):
        monitor = "a site monitor" if n >= MIN_REFERENCE_IMAGES else f"no site monitor (needs {MIN_REFERENCE_IMAGES})"
        return (f"{n} validation images: {monitor}, no learned check (needs "
                f"{min_calibration_images(REFUSAL_RATE / len(SPACES))} to calibrate)")
    return (f"learned check and site monitor calibrated on {n} validation images in each artifact's runtime "
            f"({gate['feature_dim']} features + the input's layout; {gate['metadata_numbers']} numbers in the metadata)")
