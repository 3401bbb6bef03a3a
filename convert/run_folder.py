"""A trained run folder as the converter sees it: its Keras model, metadata and data split."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.folders import LABELS, LabelledImage
from edgecxr.edge_runtime.metadata import ModelMetadata, read_metadata

MODEL_FILE = "model.keras"
SPLIT_FILE = "split.json"


@dataclass
class RunFolder:
    path: Path
    model_path: Path
    metadata: ModelMetadata

    @classmethod
    def open(cls, path: Path) -> "RunFolder":
        path = Path(path)
        if not path.is_dir():
            raise EdgecxrError(f"run folder not found: {path}")
        model_path = path / MODEL_FILE
        if not model_path.is_file():
            raise EdgecxrError(f"{path} is not a run folder: no {MODEL_FILE} inside (train one with edgecxr train)")
        return cls(path, model_path, read_metadata(model_path))

    def split(self, part: str) -> list[LabelledImage]:
        """The images of split.json's "train" or "validation" list, labelled by their class folder."""
        split_path = self.path / SPLIT_FILE
        if not split_path.is_file():
            raise EdgecxrError(f"{self.path} has no {SPLIT_FILE}; pass --calibration-data (and --no-verify)")
        try:
            paths = json.loads(split_path.read_text(encoding="utf-8"))[part]
        except (OSError, ValueError, KeyError) as exc:
            raise EdgecxrError(f"{split_path} is unreadable or lacks the {part!r} list: {exc}") from None
        return [labelled_from_path(Path(p), split_path) for p in paths]


def labelled_from_path(path: Path, listed_in: Path) -> LabelledImage:
    """The class is the parent folder's name, as in every Kaggle-layout folder."""
    if not path.is_file():
        raise EdgecxrError(
            f"{listed_in} lists {path}, which does not exist (relative paths are relative to the folder "
            f"edgecxr train ran in: run convert from there, or pass --calibration-data)"
        )
    if path.parent.name not in LABELS:
        raise EdgecxrError(f"{listed_in} lists {path}, which is not inside a {'/'.join(LABELS)} folder")
    return LabelledImage(path, LABELS.index(path.parent.name))
