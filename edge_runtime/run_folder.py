"""The run folder: the one place that knows its file names and how one is created, found and opened.

`edgecxr train` writes it, `evaluate`, `convert` and `bench` read it. A run is written into a
hidden staging folder next to its final place and appears there only once complete; the staging
folder keeps the trained model as soon as training ends, so a failure after that (scoring,
plotting, a kill for memory) can be finished with `edgecxr train --resume` instead of retraining.
TensorFlow-free, like everything in edge_runtime/.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import EdgecxrError
from .folders import LABELS, LabelledImage
from .metadata import ModelMetadata, read_metadata

MODEL_FILE = "model.keras"
SPLIT_FILE = "split.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
# Written to the staging folder right after training, with MODEL_FILE: what --resume starts from.
TRAINED_FILE = "trained.json"
EXPORT_DIR = "export"
VERIFY_FILE = "verify.json"
# What `edgecxr evaluate RUN DATA` measured on labelled folders other than the run's own split (another
# site's films): {folder: result}, each with the sha256 of the model it scored. convert copies the
# entries of its source model into every artifact's metadata, where the model card reads them.
EVALUATIONS_FILE = "evaluations.json"


def require_run_folder(path: Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise EdgecxrError(f"run folder not found: {path}")
    if not (path / MODEL_FILE).is_file():
        raise EdgecxrError(f"{path} is not a run folder: no {MODEL_FILE} inside (train one with edgecxr train)")
    return path


def model_file(run_or_model: Path) -> Path:
    """A run folder means its Keras model; a model file is taken as it is."""
    path = Path(run_or_model)
    if path.is_dir():
        return require_run_folder(path) / MODEL_FILE
    if not path.is_file():
        raise EdgecxrError(f"model or run folder not found: {path}")
    return path


def staging_folder(out: Path) -> Path:
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


def backup_folder(out: Path) -> Path:
    """Where the chief of a distributed training backs up each epoch (removed when training ends)."""
    out = Path(out)
    return out.with_name(f".{out.name}.backup")


def create_staging(out: Path, overwrite: bool, resume: bool = False) -> Path:
    """The staging folder for a run bound for `out`: new and empty, or (resume) the one a finished
    training left behind. Checked before any decoding or training, so a bad --out costs nothing."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise EdgecxrError(f"run folder {out} already exists; pick another --out or pass --overwrite")
    staging = staging_folder(out)
    if resume:
        if not (staging / TRAINED_FILE).is_file() or not (staging / MODEL_FILE).is_file():
            raise EdgecxrError(f"nothing to resume for {out}: {staging} holds no finished training "
                               f"(run the same command without --resume)")
        return staging
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
    except OSError as exc:
        raise EdgecxrError(f"cannot create the run folder {out}: {exc.strerror or exc}") from exc
    return staging


def publish(staging: Path, out: Path) -> None:
    """Put the finished staging folder at `out`, replacing an earlier run only now."""
    out = Path(out)
    if out.exists():
        retired = out.with_name(f".{out.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        out.rename(retired)
        staging.rename(out)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(out)


@dataclass
class RunFolder:
    path: Path
    model_path: Path
    metadata: ModelMetadata

    @classmethod
    def open(cls, path: Path) -> "RunFolder":
        path = require_run_folder(path)
        return cls(path, path / MODEL_FILE, read_metadata(path / MODEL_FILE))

    @property
    def export_dir(self) -> Path:
        return self.path / EXPORT_DIR

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
