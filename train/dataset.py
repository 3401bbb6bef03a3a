"""The Kaggle folder layout, patient ids, and the patient-level validation split."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.data_location import KAGGLE_HINT
from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.folders import has_class_folders, list_images

# An official val/ this small (the Kaggle one has 16 images) cannot steer early stopping or a
# threshold, so a patient-level split of train/ is used instead.
MIN_VAL_IMAGES = 100

PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_"),  # person1000_bacteria_2931.jpeg
    re.compile(r"^(NORMAL2-IM-\d+)-"),  # NORMAL2-IM-1427-0001.jpeg
    re.compile(r"^(IM-\d+)-"),  # IM-0115-0001.jpeg
)


@dataclass(frozen=True)
class KaggleSplits:
    train: Path
    val: Path | None
    test: Path | None


def find_splits(root: Path) -> KaggleSplits:
    """Locate train/ (required), val/ and test/ (optional) under a Kaggle-layout root."""
    root = Path(root)
    if not root.is_dir():
        raise EdgecxrError(f"data folder not found: {root}; {KAGGLE_HINT}")
    train = root / "train"
    if not train.is_dir():
        raise EdgecxrError(f"{root} has no train/ folder; {KAGGLE_HINT}")
    val = root / "val" if has_class_folders(root / "val") else None
    test = root / "test" if has_class_folders(root / "test") else None
    return KaggleSplits(train=train, val=val, test=test)


def evaluation_folder(path: Path) -> Path:
    """A Kaggle root means its test/ split; otherwise the folder itself must hold class folders."""
    path = Path(path)
    if not path.is_dir():
        raise EdgecxrError(f"folder not found: {path}")
    if has_class_folders(path):
        return path
    if has_class_folders(path / "test"):
        return path / "test"
    raise EdgecxrError(
        f"{path} has neither NORMAL/ and PNEUMONIA/ subfolders nor a test/ folder with them"
    )


def patient_id(path: Path) -> str:
    """The patient a file belongs to; unknown names count as their own patient."""
    name = Path(path).name
    for pattern in PATIENT_PATTERNS:
        match = pattern.match(name)
        if match:
            return match.group(1)
    return Path(path).stem


def split_by_patient(paths: list, labels: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val): every image of a patient lands on the same side; stratified by class.

    Patients are shuffled within their class with a seeded generator and moved to validation
    until it holds `val_fraction` of that class's images.
    """
    if not 0.0 < val_fraction < 1.0:
        raise EdgecxrError("validation fraction must be between 0 and 1")
    images_of = defaultdict(list)
    for index, path in enumerate(paths):
        images_of[patient_id(Path(path))].append(index)
    patients_by_class = defaultdict(list)
    for patient, indices in images_of.items():
        patient_labels = [int(labels[i]) for i in indices]
        patients_by_class[max(set(patient_labels), key=patient_labels.count)].append(patient)
    rng = np.random.default_rng(seed)
    val_indices = []
    for label in sorted(patients_by_class):
        patients = sorted(patients_by_class[label])
        rng.shuffle(patients)
        class_total = sum(len(images_of[p]) for p in patients)
        taken = 0
        for patient in patients:
            if taken >= val_fraction * class_total:
                break
            val_indices.extend(images_of[patient])
            taken += len(images_of[patient])
    val_set = set(val_indices)
    train_indices = [i for i in range(len(paths)) if i not in val_set]
    return train_indices, sorted(val_set)


def official_val_usable(splits: KaggleSplits) -> bool:
    return splits.val is not None and len(list_images(splits.val)) >= MIN_VAL_IMAGES
