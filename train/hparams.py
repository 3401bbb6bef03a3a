"""Everything that decides a training run, in one record that is saved with the run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from .augment import AugmentConfig


@dataclass
class TrainConfig:
    data: Path
    out: Path
    arch: str = "compact"
    epochs: int = 8
    batch_size: int = 32
    image_size: int | None = None  # None: the architecture's default
    seed: int = 42
    learning_rate: float = 1e-3
    val_fraction: float = 0.15
    target_sensitivity: float = 0.95
    patience: int = 3
    class_weights: bool = True
    # Soft targets keep the sigmoid off its flat ends: the net stays less sure of this hospital's
    # look, and an int8 output (256 levels) keeps its ranking instead of piling up at 0 and 1.
    label_smoothing: float = 0.1
    equalize: str = "histogram"
    crop: float = 0.0  # share of each image edge dropped before resizing (see PreprocessSpec.crop)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # ImageNet backbones only (see transfer_training.py)
    weights: str | None = None  # None: the arch's default (imagenet for backbones)
    strategy: str = "fine-tune"
    fine_tune_from: str | None = None  # layer name or top fraction of the backbone; None: default
    head_epochs: int = 5
    fine_tune_lr_factor: float = 0.1
    augment_passes: int = 3
    # Compact net only (see distillation.py): targets from these runs' models instead of the labels,
    # on this many warped views of each film; label smoothing and augmentation are then not used.
    teachers: list[str] = field(default_factory=list)
    teacher_views: int = 4
    # none, mirrored (one machine's devices) or multi-worker (TF_CONFIG); see distribution.py
    distribute: str = "none"
    overwrite: bool = False
    resume: bool = False  # finish a run whose training ended but whose last steps failed

    def to_dict(self) -> dict:
        data = asdict(self)
        data["data"], data["out"] = str(self.data), str(self.out)
        return data
