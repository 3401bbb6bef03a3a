"""`edgecxr train` and `edgecxr evaluate` (import-light: TensorFlow loads only when they run)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from edgecxr.edge_runtime.data_location import resolve_data_dir
from edgecxr.edge_runtime.console import console
from edgecxr.edge_runtime.extras import require_extra

from .augment import MAX_FRAME_AREA, NO_AUGMENTATION, AugmentConfig


class Arch(str, Enum):
    """The architectures of model_specs.MODEL_SPECS, listed here because that module loads numpy and the
    CLI starts without it (tests/test_cli_help.py checks that the two lists agree)."""

    compact = "compact"
    efficientnet_lite0 = "efficientnet_lite0"
    efficientnet_lite2 = "efficientnet_lite2"
    mobilenet_v2 = "mobilenet_v2"
    mobilenet_v3_small = "mobilenet_v3_small"
    mobilenet_v3_large = "mobilenet_v3_large"


class Strategy(str, Enum):
    """transfer_training.STRATEGIES."""

    feature_extract = "feature-extract"
    fine_tune = "fine-tune"


class Distribute(str, Enum):
    """distribution.MODES."""

    none = "none"
    mirrored = "mirrored"
    multi_worker = "multi-worker"


class Equalize(str, Enum):
    """edge_runtime.preprocessing.EQUALIZE_MODES."""

    histogram = "histogram"
    none = "none"


# Help panels, so that each option table fits an 80-column terminal (a Pi over SSH) without cutting an
# option name short. Rich narrows a table's columns evenly, so an on/off flag with a long --no- form
# shares its panel only with options whose type column is short (no numeric range shown): hence the
# class-weight switch sits with the augmentation switches, and --zoom checks its range itself.
DATA, MODEL, TRAINING, AUGMENTATION, OUTPUT = "Data", "Model", "Training", "Augmentation and class weights", "Output"
MAX_ZOOM = 0.5
MAX_LOG_JITTER = 1.0  # --frame-aspect and --gamma: factors within e**-1..e**1 (0.37..2.7)


def _in_range(top: float):
    def check(value: float) -> float:
        if not 0.0 <= value <= top:
            raise typer.BadParameter(f"{value} is not in the range 0.0<=x<={top}.")
        return value
    return check


_zoom_in_range = _in_range(MAX_ZOOM)


def train(
    data: Optional[Path] = typer.Option(None, help="Kaggle-layout folder (train/, optional val/ and test/). "
                                        "Default: $EDGECXR_DATA, ../shared/data/chest_xray or data/chest_xray.",
                                        rich_help_panel=DATA),
    val_fraction: float = typer.Option(0.15, min=0.01, max=0.9, help="Share of train/ patients for validation.",
                                       rich_help_panel=DATA),
    image_size: Optional[int] = typer.Option(None, min=16, help="Square input size; default depends on --arch.",
                                             rich_help_panel=DATA),
    equalize: Equalize = typer.Option(Equalize.histogram, help="Exposure normalisation.", rich_help_panel=DATA),
    crop: float = typer.Option(0.0, min=0.0, help="Share of each image edge cut off before resizing (side "
                               "markers, text, collimation borders).", rich_help_panel=DATA),
    arch: Arch = typer.Option(Arch.compact, metavar="<name>", help="Model architecture: "
                              + ", ".join(a.value for a in Arch) + ".", rich_help_panel=MODEL),
    weights: Optional[str] = typer.Option(None, help="ImageNet backbones: imagenet (default), none (from "
                                          "scratch) or a weights file PATH.", rich_help_panel=MODEL),
    strategy: Strategy = typer.Option(Strategy.fine_tune, metavar="<name>", help="ImageNet backbones: "
                                      "feature-extract (train the head only) or fine-tune (two phases).",
                                      rich_help_panel=MODEL),
    fine_tune_from: Optional[str] = typer.Option(
        None, help="fine-tune: first backbone layer to unfreeze, by name (or prefix), or the top fraction of "
        "backbone layers, e.g. 0.1 (default).", rich_help_panel=MODEL),
    head_epochs: int = typer.Option(5, min=1, help="fine-tune: epochs of phase 1 (head only).",
                                    rich_help_panel=MODEL),
    augment_passes: int = typer.Option(3, min=1, help="ImageNet backbones: augmented passes of train/ whose "
                                       "frozen-backbone activations are cached; epochs cycle through them.",
                                       rich_help_panel=MODEL),
    teacher: Optional[list[Path]] = typer.Option(
        None, "--teacher", help="Compact net: learn the mean answer of these run folders' models (repeat the "
        "option for each; trained on the same split) on warped views of each film, instead of the labels. "
        "Label smoothing and augmentation are then unused.", rich_help_panel=MODEL),
    teacher_views: int = typer.Option(4, min=1, help="--teacher: warped views of each film (each epoch sees "
                                      "them all).", rich_help_panel=MODEL),
    epochs: int = typer.Option(8, min=1, help="Maximum epochs (early stopping on validation loss).",
                               rich_help_panel=TRAINING),
    batch_size: int = typer.Option(32, min=1, help="Per replica (--distribute: the global batch and the "
                                   "learning rate grow with the replicas).", rich_help_panel=TRAINING),
    learning_rate: float = typer.Option(1e-3, min=1e-7, rich_help_panel=TRAINING),
    patience: int = typer.Option(3, min=1, help="Early-stopping patience in epochs, counted in the second half "
                                 "of each training phase (its first half can neither stop it nor be kept).",
                                 rich_help_panel=TRAINING),
    label_smoothing: float = typer.Option(0.1, min=0.0, max=0.5, help="Soft targets 0+s/2 and 1-s/2.",
                                          rich_help_panel=TRAINING),
    target_sensitivity: float = typer.Option(0.95, min=0.5, max=1.0, help="Threshold = highest one with this "
                                             "validation sensitivity.", rich_help_panel=TRAINING),
    seed: int = typer.Option(42, rich_help_panel=TRAINING),
    distribute: Distribute = typer.Option(Distribute.none, metavar="<mode>", help="none, mirrored (this "
                                          "machine's devices) or multi-worker (one process per machine, "
                                          "TF_CONFIG); see docs/distributed.md.", rich_help_panel=TRAINING),
    augment: bool = typer.Option(True, help="Geometric and photometric augmentation.",
                                 rich_help_panel=AUGMENTATION),
    zoom: float = typer.Option(AugmentConfig.zoom, callback=_zoom_in_range, help="Scale drawn from [1 - zoom, "
                               "1 + zoom] (zoom at most 0.5), so the chest's size in the frame varies as it does "
                               "between sites.", rich_help_panel=AUGMENTATION),
    frame_area: float = typer.Option(AugmentConfig.frame_area, callback=_in_range(MAX_FRAME_AREA), help="Framing "
                                     f"crop: a window of [1 - a, 1] of the area (a at most {MAX_FRAME_AREA}) "
                                     "stretched to full size, as a tighter collimation looks. 0: off.",
                                     rich_help_panel=AUGMENTATION),
    frame_aspect: float = typer.Option(AugmentConfig.frame_aspect, callback=_in_range(MAX_LOG_JITTER),
                                       help="Framing crop's aspect ratio drawn from exp([-r, r]), e.g. 0.29 for "
                                       "3/4..4/3.", rich_help_panel=AUGMENTATION),
    gamma: float = typer.Option(AugmentConfig.gamma, callback=_in_range(MAX_LOG_JITTER), help="Exposure curve "
                                "x**g, g drawn from exp([-r, r]), e.g. 0.35 for 0.7..1.4. 0: off.",
                                rich_help_panel=AUGMENTATION),
    horizontal_flip: bool = typer.Option(False, help="Flip augmentation (off: anatomy is not symmetric).",
                                         rich_help_panel=AUGMENTATION),
    class_weights: bool = typer.Option(True, help="Weight classes by inverse frequency.",
                                       rich_help_panel=AUGMENTATION),
    out: Optional[Path] = typer.Option(None, help="Run folder. Default: runs/ARCH-TIMESTAMP.",
                                       rich_help_panel=OUTPUT),
    overwrite: bool = typer.Option(False, help="Replace an existing run folder.", rich_help_panel=OUTPUT),
    resume: bool = typer.Option(False, "--resume", help="Finish a run whose training ended but whose last "
                                "steps failed (same command), without retraining.", rich_help_panel=OUTPUT),
):
    """Train a model and write a run folder (model, metadata, history, metrics, plots)."""
    from edgecxr.edge_runtime.preprocessing import MAX_CROP  # not at import: the CLI starts without numpy

    if crop > MAX_CROP:
        raise typer.BadParameter(f"{crop} is above {MAX_CROP}, the most of each edge that may be cut", param_hint="--crop")
    require_extra("train")
    from .hparams import TrainConfig
    from .trainer import train as run_training

    augmentation = AugmentConfig(zoom=zoom, horizontal_flip=horizontal_flip, frame_area=frame_area,
                                 frame_aspect=frame_aspect, gamma=gamma) if augment else NO_AUGMENTATION
    config = TrainConfig(
        data=resolve_data_dir(data), out=out or Path("runs") / f"{arch.value}-{datetime.now():%Y%m%d-%H%M%S}",
        arch=arch.value, epochs=epochs, batch_size=batch_size, image_size=image_size, seed=seed,
        learning_rate=learning_rate, val_fraction=val_fraction, target_sensitivity=target_sensitivity,
        patience=patience, class_weights=class_weights, label_smoothing=label_smoothing, equalize=equalize.value,
        crop=crop, augment=augmentation, overwrite=overwrite, resume=resume, weights=weights,
        strategy=strategy.value, distribute=distribute.value,
        fine_tune_from=fine_tune_from, head_epochs=head_epochs, augment_passes=augment_passes,
        teachers=[str(path) for path in teacher or []], teacher_views=teacher_views,
    )
    run_training(config)


def evaluate(
    run_or_model: Path = typer.Argument(..., help="A run folder (uses its model.keras) or a .keras/.tflite/.onnx file."),
    data: Optional[Path] = typer.Option(None, help="A Kaggle root (its test/ is used) or a folder with "
                                        "NORMAL/ and PNEUMONIA/ subfolders. Default: the default data folder."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the metrics as JSON here."),
    plots: Optional[Path] = typer.Option(None, help="Folder for confusion-matrix and ROC PNGs "
                                         "(default: the run folder, or the model's folder)."),
    trust: bool = typer.Option(False, help="Run a model even if its sha256 does not match its metadata."),
):
    """Accuracy, sensitivity, specificity, F1, ROC AUC and confusion matrix at the stored threshold."""
    from edgecxr.edge_runtime.atomic import write_json_atomic

    # Before anything loads: a .tflite/.onnx model runs on the edge runtime, but the confusion-matrix and
    # ROC plots need matplotlib, which only the train extra brings (a Keras model needs TensorFlow too).
    keras_model = Path(run_or_model).suffix in ("", ".keras") or Path(run_or_model).is_dir()
    require_extra("evaluate", modules=None if keras_model else ("matplotlib",))
    from .evaluate import evaluate as run_evaluation
    from .report import metrics_table

    model_dir = Path(run_or_model) if Path(run_or_model).is_dir() else Path(run_or_model).parent
    result = run_evaluation(Path(run_or_model), resolve_data_dir(data), plots or model_dir, trust=trust)
    console.print(metrics_table(result, title=f"{result['model']} on {result['data']}"))
    if result["skipped"]:
        console.print(f"{len(result['skipped'])} file(s) skipped", highlight=False)
    if json_path is not None:
        write_json_atomic(json_path, result)
        console.print(f"metrics written to {json_path}", highlight=False)
