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
    equalize: str = "histogram"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    overwrite: bool = False

    def to_dict(self) -> dict:
        data = asdict(self)
        data["data"], data["out"] = str(self.data), str(self.out)
        return data
