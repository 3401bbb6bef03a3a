"""`edgecxr doctor`: what a clinic's IT person needs to know before the first X-ray is run.

Which inference runtimes import on this machine (and which one a .tflite model will use), and
whether a given model's metadata, checksum, loading and one test prediction all work, and whether
it carries the learned input check and the site monitor.
"""

from __future__ import annotations

import importlib
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EdgecxrError
from .formats import EDGE_SUFFIXES, EXPORT_FORMATS
from .model_card import figures_text, performance, threshold_rule
from .versions import package_version

# (package name on PyPI, module that must import for it to be usable, the suffix it runs), from the format table
RUNTIMES = tuple(dict.fromkeys((package, module, row.suffix) for row in EXPORT_FORMATS
                                for package, module in row.runtime.packages))


@dataclass
class RuntimeCheck:
    package: str
    runs: str
    version: str | None
    importable: bool
    problem: str = ""


@dataclass
class ModelCheck:
    path: str
    ok: bool
    problem: str = ""
    facts: dict = field(default_factory=dict)


def check_runtimes() -> list[RuntimeCheck]:
    checks = []
    for package, module, runs in RUNTIMES:
        version = package_version(package)
        try:
            importlib.import_module(module)
            checks.append(RuntimeCheck(package, runs, version, True))
        except Exception as exc:  # noqa: BLE001 - a broken install raises more than ImportError
            problem = "not installed" if version is None else f"installed but does not import: {exc}"
            checks.append(RuntimeCheck(package, runs, version, False, problem))
    numpy_version = package_version("numpy") or ""
    for check in checks:
        if check.package == "tflite-runtime" and check.importable and _major(numpy_version) >= 2:
            check.problem = f"needs numpy<2 (numpy {numpy_version} installed): pip install 'numpy<2'"
    return checks


def check_model(path: Path, threads: int | None = None) -> ModelCheck:
    """Load the model exactly as `predict` does and run one synthetic image through it."""
    import numpy as np

    from PIL import Image

    from .predictor import Predictor

    started = time.perf_counter()
    try:
        predictor = Predictor.open(path, threads=threads)
    except EdgecxrError as exc:
        return ModelCheck(str(path), False, str(exc))
    load_ms = (time.perf_counter() - started) * 1000.0
    md = predictor.metadata
    facts = {
        "format": f"{md.format} ({md.quantization})",
        "architecture": md.arch,
        "runtime": predictor.runtime,
        "input": f"{'x'.join(map(str, predictor.backend.expected_input_hwc))} {predictor.backend.input_dtype}",
        "threshold": f"{md.threshold:.4f}",
        "sha256": "matches metadata",
        "commissioned": commissioned(md.commissioning),
        "threshold rule": threshold_rule(md),
        "validated": validated_text(md),
        "load": f"{load_ms:.0f} ms",
    }
    for site in performance(md).get("other_sites") or []:
        facts[f"at another site ({site.get('data')})"] = figures_text(site)
    facts["input gate"] = f"cheap checks on; learned check {predictor.learned_check}"
    reference = predictor.reference
    if reference is not None and reference.learned_check_available:
        facts["input gate"] += (f" ({reference.feature_dim} features and the input's layout, calibrated on "
                                f"{len(reference.reference_probabilities)} validation images to refuse at most "
                                f"{reference.calibration.get('refusal_rate', 0.01):.0%} of X-rays)")
    if reference is None or not reference.monitor_available:
        facts["site monitor"] = "unavailable (no feature reference with enough validation images)"
    elif reference.mean_shift is not None:
        facts["site monitor"] = (f"on (mean shift of the outputs and the film layout, nulls drawn by patient; layout "
                                 f"reference {reference.mean_shift.layout_reference.n} training films)")
    else:
        facts["site monitor"] = "on (KS tests; re-export with edgecxr convert for the tests drawn by patient)"
    # A smooth gradient, not noise: any real model must give a finite probability (and features) for
    # it. It goes to the backend directly: whether the gate would refuse it is not the question here.
    gradient = np.tile(np.linspace(0, 255, 256, dtype=np.float32), (256, 1)).astype(np.uint8)
    started = time.perf_counter()
    try:
        probabilities, features = predictor.backend.predict(predictor.backend.prepare(Image.fromarray(gradient))[None])
        probability = float(probabilities[0])
    except Exception as exc:  # noqa: BLE001 - report, do not crash, whatever the runtime raises
        return ModelCheck(str(path), False, f"loads, but a test prediction fails: {exc}", facts)
    latency_ms = (time.perf_counter() - started) * 1000.0
    if not np.isfinite(probability) or not 0.0 <= probability <= 1.0:
        return ModelCheck(str(path), False, f"test prediction is not a probability: {probability}", facts)
    if features is not None and not np.all(np.isfinite(features)):
        return ModelCheck(str(path), False, "test prediction gives non-finite features", facts)
    facts["test prediction"] = f"{latency_ms:.1f} ms"
    return ModelCheck(str(path), True, "", facts)


def validated_text(metadata) -> str:
    figures = performance(metadata).get("validated")
    if not figures:
        return "not recorded in the metadata (exported before edgecxr sealed its card: re-export it)"
    return f"{figures_text(figures)} ({figures.get('source')})"


def commissioned(record: dict | None) -> str:
    if record is None:
        return "no (validated threshold; edgecxr commission sets a site's own)"
    images = ", ".join(f"{label} {count}" for label, count in record.get("images", {}).items())
    return (f"for site {record.get('site')} on {str(record.get('date'))[:10]} ({images}): threshold "
            f"{record.get('previous_threshold', float('nan')):.4f} -> {record.get('threshold', float('nan')):.4f}")


def print_report(console, runtimes: list[RuntimeCheck], model: ModelCheck | None) -> bool:
    """Print the findings; True when a runtime is usable and the model (if any) runs."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="edgecxr doctor", title_justify="left", show_header=True)
    table.add_column("package")
    table.add_column("version")
    table.add_column("runs")
    table.add_column("status", overflow="fold")
    table.add_row("python", platform.python_version(), "", f"{platform.system()} {platform.machine()}")
    for package in ("numpy", "pillow"):
        table.add_row(package, package_version(package) or "-", "", "")
    for check in runtimes:
        if check.importable and not check.problem:
            status = "[green]ok[/green]"
        elif check.importable:
            status = f"[yellow]{escape(check.problem)}[/yellow]"
        else:
            status = f"[dim]{escape(check.problem)}[/dim]" if check.version is None else f"[red]{escape(check.problem)}[/red]"
        table.add_row(check.package, check.version or "-", check.runs, status)
    console.print(table)

    usable = []
    for suffix in EDGE_SUFFIXES:
        found = next((c for c in runtimes if c.runs == suffix and c.importable), None)
        usable.append(found)
        runtime = next(row.runtime for row in EXPORT_FORMATS if row.suffix == suffix)
        hint = f"[red]nothing[/red] ({runtime.install_hint})"
        console.print(f"{suffix} models run on: {found.package if found else hint}", highlight=False)
    ok = any(found is not None for found in usable)
    if model is not None:
        if model.ok:
            console.print(f"[green]model OK[/green] {escape(model.path)}", highlight=False)
        else:
            console.print(f"[red]model NOT OK[/red] {escape(model.path)}: {escape(model.problem)}", highlight=False)
        for key, value in model.facts.items():
            console.print(f"  {key}: {escape(str(value))}", highlight=False)
        ok = ok and model.ok
    return ok


def _major(version: str) -> int:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0
