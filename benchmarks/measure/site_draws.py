"""A simulated site's films and draws, shared by the commissioning measurements: test/ scored once
by patient, and whole-patient draws of about k labelled films per class in the classes' proportions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.folders import labelled_images
from edgecxr.edge_runtime.predictor import Predictor
from edgecxr.train.dataset import patient_id

TARGET = 0.95  # the sensitivity a site must keep
FIGURES = ("accuracy", "sensitivity", "specificity")


def model_path(given: Path) -> Path:
    return given / "export" / "model_int8.tflite" if given.is_dir() else given


def score_test(predictor: Predictor, folder: Path) -> dict:
    """Every test/ image once: probabilities of the accepted ones, with truth and patient."""
    images = labelled_images(folder, tuple(predictor.metadata.labels))
    truths, probabilities, patients, paths, refused, skipped = [], [], [], [], 0, 0
    for image, prediction in zip(images, predictor.predict_many((i.path for i in images), batch_size=32)):
        if not prediction.ok:
            skipped += 1
        elif prediction.refused:
            refused += 1
        else:
            truths.append(image.label == predictor.metadata.labels.index(predictor.positive_label))
            probabilities.append(prediction.probability)
            patients.append(f"{image.label}:{patient_id(image.path)}")
            paths.append(str(image.path))
    return {"truths": np.array(truths), "probabilities": np.array(probabilities), "patients": np.array(patients),
            "paths": paths, "refused": refused, "skipped": skipped}


def draw_commissioning_part(truths: np.ndarray, patients: np.ndarray, k: int, rng) -> np.ndarray:
    """A boolean mask of about k images: whole patients per class, in the classes' proportions."""
    mask = np.zeros(len(truths), dtype=bool)
    for positive in (False, True):
        in_class = truths == positive
        quota = max(1, round(k * in_class.mean()))
        groups = np.unique(patients[in_class])
        rng.shuffle(groups)
        taken = 0
        for group in groups:
            if taken >= quota:
                break
            members = patients == group
            mask |= members
            taken += int(members.sum())
    return mask


def summarise(values: list[float]) -> dict:
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "p10": float(np.percentile(values, 10))}
