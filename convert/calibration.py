"""The images int8 calibration and verification use: seeded, stratified, and never from test/.

Calibration draws from the training split (what the model was fitted on, so the activation
ranges it records are the ones the model was shaped for); verification draws from the
validation split, so no image is used for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.folders import LabelledImage, has_class_folders, labelled_images
from edgecxr.edge_runtime.preprocessing import PreprocessSpec, scale_pixels
from edgecxr.edge_runtime.run_folder import RunFolder
from edgecxr.train.pixel_cache import load_pixels


DEFAULT_CALIBRATION_SIZE = 300
DEFAULT_VERIFY_SIZE = 500


class ScaledPixels:
    """uint8 pixels (N, H, W, C) that read as the model's float32 inputs, a slice at a time.

    Calibration and verification sets used to be held scaled, as float32: four times the bytes of
    their pixels (0.9 GB for Lite0's sets with the input gate), which set convert's peak memory.
    Every consumer takes slices (batches, single images) anyway, and each slice is scaled exactly as
    before, with `scale_pixels` on float32 pixels, so the values are bit-identical.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, pixels: np.ndarray, spec: PreprocessSpec):
        self.pixels = pixels
        self.spec = spec

    @property
    def shape(self) -> tuple[int, ...]:
        return self.pixels.shape

    @property
    def ndim(self) -> int:
        return self.pixels.ndim

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, key) -> np.ndarray:
        return scale_pixels(self.pixels[key].astype(np.float32), self.spec)

    def __iter__(self):
        for index in range(len(self.pixels)):
            yield self[index]

    def __array__(self, dtype=None, copy=None):
        # Only for callers that need the whole set at once (none in convert): the full float32 copy.
        array = self[:]
        return array if dtype is None else array.astype(dtype)


@dataclass
class ImageSet:
    """Model inputs (N, H, W, C), held as uint8 and scaled when read, their labels and sources."""

    inputs: ScaledPixels
    labels: np.ndarray
    paths: list[str]
    source: str

    def describe(self) -> dict:
        return {"source": self.source, "n_images": int(len(self.labels)),
                "per_class": np.bincount(self.labels, minlength=2).tolist()}


def stratified_sample(samples: list[LabelledImage], size: int, seed: int) -> list[LabelledImage]:
    """`size` samples keeping each class's share (at least one per class present), seeded."""
    if size >= len(samples):
        return list(samples)
    rng = np.random.default_rng(seed)
    labels = np.array([s.label for s in samples])
    classes = sorted(set(labels.tolist()))
    chosen = []
    for label in classes:
        members = np.flatnonzero(labels == label)
        take = max(1, int(round(size * len(members) / len(samples))))
        chosen.extend(rng.choice(members, size=min(take, len(members)), replace=False).tolist())
    return [samples[i] for i in sorted(chosen)]


def calibration_folder(folder: Path) -> Path:
    """A class folder, or a Kaggle root whose train/ is used; test/ is refused."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgecxrError(f"--calibration-data folder not found: {folder}")
    if not has_class_folders(folder) and has_class_folders(folder / "train"):
        folder = folder / "train"
    if folder.resolve().name.lower() == "test":
        raise EdgecxrError(f"refusing to calibrate on {folder}: test images are for the final evaluation only")
    if not has_class_folders(folder):
        raise EdgecxrError(f"--calibration-data {folder} has neither NORMAL/ and PNEUMONIA/ subfolders nor a "
                           f"train/ folder with them")
    return folder


def to_image_set(samples: list[LabelledImage], spec: PreprocessSpec, source: str, description: str) -> ImageSet:
    """Decode with the training pipeline (pixel cache) and scale exactly once, as training did."""
    pixel_set = load_pixels(samples, spec, description)
    return ImageSet(ScaledPixels(pixel_set.pixels, spec), pixel_set.labels, pixel_set.paths, source)


def verification_set(run: RunFolder, size: int, seed: int) -> ImageSet:
    samples = stratified_sample(run.split("validation"), size, seed)
    return to_image_set(samples, run.metadata.preprocessing, f"{run.path}/split.json validation",
                        "decoding verification images")


def calibration_set(run: RunFolder, size: int, seed: int, data: Path | None = None,
                    exclude: list[str] | tuple = ()) -> ImageSet:
    """Calibration images from the run's training split, or from `data`; never any in `exclude`."""
    if data is None:
        samples, source = run.split("train"), f"{run.path}/split.json train"
    else:
        folder = calibration_folder(data)
        samples, source = labelled_images(folder), str(folder)
    excluded = {Path(p).resolve() for p in exclude}
    samples = [s for s in samples if s.path.resolve() not in excluded]
    if not samples:
        raise EdgecxrError(f"no calibration images left in {source}")
    chosen = stratified_sample(samples, size, seed)
    return to_image_set(chosen, run.metadata.preprocessing, source, "decoding calibration images")
