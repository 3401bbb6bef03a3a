"""Turn the paths a user typed into the list of images to predict, with true labels where known."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import EdgecxrError
from .folders import has_class_folders, list_images


@dataclass(frozen=True)
class ImageItem:
    path: Path
    truth: str | None = None  # the class subfolder it came from, when the folder has NORMAL/ and PNEUMONIA/


def collect_images(paths: list[Path], labels: tuple[str, ...]) -> list[ImageItem]:
    """Files are taken as given (a bad one is reported later, per file); folders are searched.

    A folder with one subfolder per label is a labelled test set: its images carry their truth.
    A path that does not exist at all is a usage error, caught before the model is even loaded.
    """
    items: list[ImageItem] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found = list_images(path)
            labelled = has_class_folders(path, labels)
            for image in found:
                truth = None
                if labelled:
                    first = image.relative_to(path).parts[0]
                    truth = first if first in labels else None
                items.append(ImageItem(image, truth))
        elif os.path.lexists(path):
            items.append(ImageItem(path))
        else:
            raise EdgecxrError(f"no such file or folder: {path}")
    if not items:
        raise EdgecxrError(f"no images found in {', '.join(str(p) for p in paths)}")
    return items
