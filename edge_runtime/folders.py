"""Find images on disk: plain folders, and labelled folders with one subfolder per class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .dicom import is_dicom
from .errors import EdgecxrError

LABELS = ("NORMAL", "PNEUMONIA")
POSITIVE_LABEL = "PNEUMONIA"
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm", ".dcm",
                  ".dicom"}


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: int  # index into LABELS


def list_images(folder: Path) -> list[Path]:
    """Image-like files under `folder` (recursive), sorted so every run sees the same order.

    Files are chosen by suffix, plus suffix-less files that start like DICOM (PACS exports name
    films IM000001 and the like): whether they really decode is decided later, per file, so one
    bad file is reported and skipped instead of stopping the listing. A FIFO, device, socket or
    dangling link among them is listed too, to be reported as skipped, never opened to peek.
    """
    return sorted(p for p in Path(folder).rglob("*") if not p.name.startswith(".") and _looks_like_image(p))


def _looks_like_image(path: Path) -> bool:
    if path.is_dir():
        return False
    if not path.is_file():  # special file or dangling link: listed, so that it is reported
        return path.suffix.lower() in IMAGE_SUFFIXES or not path.suffix
    return path.suffix.lower() in IMAGE_SUFFIXES or (not path.suffix and _starts_like_dicom(path))


def _starts_like_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return is_dicom(handle.read(132))
    except OSError:
        return False


def has_class_folders(folder: Path, labels: tuple[str, ...] = LABELS) -> bool:
    return all((Path(folder) / label).is_dir() for label in labels)


def labelled_images(folder: Path, labels: tuple[str, ...] = LABELS) -> list[LabelledImage]:
    """Images of a folder with one subfolder per label; a missing or empty class is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgecxrError(f"folder not found: {folder}")
    missing = [label for label in labels if not (folder / label).is_dir()]
    if missing:
        raise EdgecxrError(
            f"{folder} has no {'/'.join(missing)} subfolder: expected one subfolder per class "
            f"({', '.join(labels)})"
        )
    samples = []
    for index, label in enumerate(labels):
        paths = list_images(folder / label)
        if not paths:
            raise EdgecxrError(f"class folder {folder / label} contains no images")
        samples.extend(LabelledImage(path, index) for path in paths)
    return samples
