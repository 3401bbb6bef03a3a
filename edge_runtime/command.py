"""`edgecxr predict`, `edgecxr commission` and `edgecxr doctor`.

The CLI imports this module at start-up for every command, so it imports only typer (already
loaded by the CLI) at module level; numpy, Pillow and the inference runtime load when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

import typer

INFERENCE, OUTPUT = "Inference", "Output"
# Films per inference call for a folder: the runtime's per-call work (the interpreter's call, the
# learned check's small matrix products) is paid once per batch; over test/ 8 took predict from 1.16
# to 1.09 CPU s against 1, with the same probabilities (docs/results/predict-cpu.md). Heat maps stay
# at 1: each film's decoded pixels wait for its map, and a batch of full-size films would hold eight.
FOLDER_BATCH = 8


def predict(
    model: Path = typer.Argument(..., help="A .tflite, .onnx or .ort model with its <model>.json metadata next to it."),
    images: List[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively). A folder "
                                        "with NORMAL/ and PNEUMONIA/ subfolders is scored against them."),
    json_lines: bool = typer.Option(False, "--json", help="Print one JSON object per image (JSON lines) on stdout.",
                                    rich_help_panel=OUTPUT),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write one CSV row per image to this file.",
                                            rich_help_panel=OUTPUT),
    summary_path: Optional[Path] = typer.Option(None, "--summary", help="Also write the run summary as JSON here.",
                                                rich_help_panel=OUTPUT),
    heatmap_dir: Optional[Path] = typer.Option(None, "--heatmap", metavar="DIR",
                                               help="Also write a heat map over each predicted film (PNG) here; "
                                                    "none for refused or skipped images.", rich_help_panel=OUTPUT),
    heatmap_method: str = typer.Option("auto", "--heatmap-method",
                                       help="cam: from the answer's own inference (no extra cost); occlusion: "
                                            "about 225 inferences a film, for any model; auto: cam where the "
                                            "model exports its feature map.", rich_help_panel=OUTPUT),
    threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0,
                                              help="P(pneumonia) at or above this is PNEUMONIA. Default: the "
                                                   "threshold stored in the model's metadata.",
                                              rich_help_panel=INFERENCE),
    threads: Optional[int] = typer.Option(None, min=1, help="Interpreter threads (default: the runtime's choice).",
                                          rich_help_panel=INFERENCE),
    batch_size: Optional[int] = typer.Option(None, min=1, help=f"Images per inference call (default {FOLDER_BATCH}; 1 "
                                             "with --heatmap, which keeps each film's pixels until its map is "
                                             "drawn).", rich_help_panel=INFERENCE),
    workers: Optional[int] = typer.Option(None, min=1, help="Threads decoding images (default: one per core for "
                                          "full-size films, one for small ones).",
                                          rich_help_panel=INFERENCE),
    reduced_decode: bool = typer.Option(False, "--reduced-decode", help="Decode large JPEGs at reduced size: "
                                        "several times faster, but may change a label at the threshold.",
                                        rich_help_panel=INFERENCE),
    trust: bool = typer.Option(False, help="Run a model even if its sha256 or its metadata's seal does not "
                               "match (warns on every run).",
                               rich_help_panel=INFERENCE),
):
    """Predict NORMAL or PNEUMONIA for images, or refuse one as not a chest X-ray, and check whether the
    images differ from the training images. Exit code 0: every image predicted or refused, 1: some
    unreadable (skipped), 2: error."""
    if json_lines and csv_path is not None:
        raise typer.BadParameter("choose one of --json and --csv", param_hint="--json/--csv")
    from .console import console
    from .errors import EdgecxrError
    from .outputs import CsvWriter, JsonLinesWriter, Summary, TableWriter
    from .predictor import Predictor
    from .sources import collect_images

    predictor = Predictor.open(model, threads=threads, trust=trust, threshold=threshold,
                               reduced_decode=reduced_decode)
    metadata = predictor.metadata
    items = collect_images(images, tuple(metadata.labels))
    summary = Summary(model=str(model), runtime=predictor.runtime, threshold=predictor.threshold,
                      positive_label=metadata.positive_label, labels=tuple(metadata.labels),
                      reference=predictor.reference, learned_check=predictor.learned_check,
                      commissioning=metadata.commissioning)
    if json_lines:
        writer = JsonLinesWriter()
    elif csv_path is not None:
        try:
            writer = CsvWriter(csv_path)
        except OSError as exc:
            raise EdgecxrError(f"cannot write {csv_path}: {exc.strerror or exc}") from None
    else:
        writer = TableWriter(f"{Path(model).name} ({predictor.runtime})")
    heatmaps, method = None, None
    if heatmap_dir is not None:
        from .heatmap import choose_method
        from .heatmap_files import HeatMapFolder

        method = choose_method(heatmap_method, predictor)
        heatmaps = HeatMapFolder(heatmap_dir)

    def handle(item, analysis) -> None:
        prediction = analysis.prediction
        writer.write(prediction, item.truth)
        summary.add(prediction, item.truth)
        if analysis.heat is not None:
            from .heatmap import overlay_png

            heatmaps.write(item.path, overlay_png(analysis.image, analysis.heat))
        elif analysis.heat_problem is not None:
            console.print(f"[yellow]no heat map for {item.path}: {analysis.heat_problem}[/yellow]", highlight=False)

    success = False
    try:
        if batch_size is None:
            batch_size = 1 if method is not None else FOLDER_BATCH
        results = predictor.analyse_many((item.path for item in items), batch_size=batch_size,
                                         workers=workers, heatmap=method)
        # Off a terminal the bar becomes a plain line every 30 s (edge_runtime/console.py).
        if len(items) > 1:
            from .console import progress_bar

            with progress_bar() as progress:
                task = progress.add_task("predicting", total=len(items))
                for item, analysis in zip(items, results):
                    handle(item, analysis)
                    progress.advance(task)
        else:
            for item, analysis in zip(items, results):
                handle(item, analysis)
        success = True
    finally:
        writer.close(success)
    summary.print(console)
    if csv_path is not None:
        console.print(f"predictions written to {csv_path}", highlight=False)
    if heatmaps is not None:
        console.print(f"{len(heatmaps.written)} heat maps written to {heatmap_dir} ({method}; none for refused "
                      f"or skipped images)", highlight=False)
    if summary_path is not None:
        from .atomic import write_json_atomic

        write_json_atomic(summary_path, summary.to_dict())
    raise typer.Exit(1 if summary.skipped else 0)


def make_commission(load_rebuild: Callable[[], Callable]):
    """The `commission` command. `load_rebuild` imports and returns the function that rebuilds the
    model with re-estimated BatchNorm statistics (TensorFlow): the CLI passes it in, so this module
    never imports convert/, and it is called only when --renormalise is given."""

    def commission(
        model: Path = typer.Argument(..., help="A .tflite, .onnx or .ort model with its <model>.json metadata next to it."),
        labelled_dir: Path = typer.Argument(..., help="This site's films, labelled by its clinician: a folder "
                                            "with NORMAL/ and PNEUMONIA/ subfolders."),
        site: Optional[str] = typer.Option(None, help="Site name (letters, digits, - and _). Default: the "
                                           "folder's name."),
        target_sensitivity: float = typer.Option(0.95, min=0.5, max=0.999,
                                                 help="Sensitivity the site threshold must keep, shown at 95% "
                                                      "confidence on the site's PNEUMONIA films."),
        renormalise: Optional[Path] = typer.Option(None, help="The run folder the model was "
                                                   "converted from: re-estimate its BatchNorm statistics on the "
                                                   "site's images (labels unused), re-export and re-verify the "
                                                   "model in the same format first. Needs the train extra."),
        out: Optional[Path] = typer.Option(None, help="The new model file. Default: beside the model, "
                                           "with .site-SITE before its extension."),
        json_path: Optional[Path] = typer.Option(None, "--json",
                                                 help="Also write the commissioning record as JSON here."),
    ):
        """Check a model on a site's labelled films (accuracy, sensitivity, specificity, 95% intervals)
        and write a copy of it with a site threshold. The original model is never changed. Exit code
        0: new model written, 1: new model written but some films were unreadable (skipped), 2: error."""
        from .commissioning import check_output, check_site_name, commission_site, default_output, print_report
        from .console import console

        model, labelled_dir = Path(model), Path(labelled_dir)
        site = check_site_name(site if site is not None else labelled_dir.resolve().name)
        out = Path(out) if out is not None else default_output(model, site)
        check_output(model, out)
        rebuild = load_rebuild() if renormalise is not None else None
        result = commission_site(model, labelled_dir, site, target_sensitivity, out, renormalise, rebuild)
        if json_path is not None:
            from .atomic import write_json_atomic

            write_json_atomic(json_path, result.to_dict())
        print_report(console, result.record, result.scores, out)
        # As predict: unreadable films are reported and exit 1, so a script notices them.
        raise typer.Exit(1 if result.scores.skipped else 0)

    return commission


def doctor(
    model: Optional[Path] = typer.Argument(None, help="Also check that this .tflite/.onnx model loads and runs."),
    threads: Optional[int] = typer.Option(None, min=1, help="Interpreter threads for the model check."),
):
    """Say which inference runtimes are installed and whether a model loads and runs (exit 0 if all is well)."""
    from .console import console
    from .doctor import check_model, check_runtimes, print_report

    runtimes = check_runtimes()
    model_check = check_model(model, threads=threads) if model is not None else None
    ok = print_report(console, runtimes, model_check)
    raise typer.Exit(0 if ok else 2)
