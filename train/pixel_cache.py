"""Decode and resize a set of images once; later runs load the result from a cache in seconds."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.atomic import atomic_path
from edgecxr.edge_runtime.console import progress_bar, warn
from edgecxr.edge_runtime.errors import EdgecxrError, ImageError
from edgecxr.edge_runtime.folders import LabelledImage
from edgecxr.edge_runtime.images import open_image
from edgecxr.edge_runtime.preprocessing import PreprocessSpec, to_pixels

# Bump when to_pixels changes its output, so old caches are not reused.
PIXEL_PIPELINE_VERSION = 1


@dataclass
class PixelSet:
    """uint8 pixels (N, H, W, C) before scaling, their labels and paths, and what was skipped."""

    pixels: np.ndarray
    labels: np.ndarray
    paths: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def subset(self, indices) -> "PixelSet":
        indices = np.asarray(indices, dtype=np.int64)
        return PixelSet(self.pixels[indices], self.labels[indices], [self.paths[i] for i in indices])


def cache_dir() -> Path:
    if os.environ.get("EDGECXR_CACHE"):
        return Path(os.environ["EDGECXR_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "edgecxr"


def cache_key(samples: list[LabelledImage], spec: PreprocessSpec) -> str:
    """Changes whenever a file is added, removed, replaced or relabelled, or preprocessing changes."""
    pixel_fields = {k: v for k, v in spec.to_dict().items() if k not in ("scale", "offset")}
    digest = hashlib.sha256(json.dumps([PIXEL_PIPELINE_VERSION, pixel_fields]).encode())
    for sample in samples:
        stat = sample.path.stat()
        digest.update(f"{sample.path.resolve()}|{sample.label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _decode_one(sample: LabelledImage, spec: PreprocessSpec):
    try:
        return to_pixels(open_image(sample.path), spec), None
    except ImageError as exc:
        return None, str(exc)


def decode_images(samples: list[LabelledImage], spec: PreprocessSpec, description: str) -> PixelSet:
    """Decode every image; unusable files are skipped with one warning line each."""
    pixels, labels, paths, skipped = [], [], [], []
    # PIL releases the GIL while decoding and resizing, so threads use both cores.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool, progress_bar() as progress:
        task = progress.add_task(description, total=len(samples))
        for sample, (array, error) in zip(samples, pool.map(lambda s: _decode_one(s, spec), samples)):
            progress.advance(task)
            if error is not None:
                warn(f"skipping {sample.path}: {error}")
                skipped.append((str(sample.path), error))
                continue
            pixels.append(array)
            labels.append(sample.label)
            paths.append(str(sample.path))
    if not pixels:
        raise EdgecxrError("no readable images found")
    return PixelSet(np.stack(pixels), np.asarray(labels, dtype=np.int64), paths, skipped)


def load_pixels(
    samples: list[LabelledImage], spec: PreprocessSpec, description: str = "decoding images", use_cache: bool = True
) -> PixelSet:
    """Pixels for `samples`, from the cache when the same files were decoded the same way before."""
    if not samples:
        raise EdgecxrError("no images to load")
    key = cache_key(samples, spec)
    path = cache_dir() / f"pixels-{key}.npz"
    if use_cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as cached:
                skipped = [tuple(item) for item in json.loads(str(cached["skipped"]))]
                for file, reason in skipped:
                    warn(f"skipping {file}: {reason}")
                return PixelSet(cached["pixels"], cached["labels"], list(cached["paths"]), skipped)
        except (OSError, KeyError, ValueError):
            warn(f"ignoring unreadable cache {path}")
    result = decode_images(samples, spec, description)
    if use_cache:
        try:
            with atomic_path(path) as tmp:
                with tmp.open("wb") as handle:
                    np.savez(
                        handle, pixels=result.pixels, labels=result.labels,
                        paths=np.asarray(result.paths), skipped=json.dumps(result.skipped),
                    )
        except OSError as exc:
            warn(f"could not write pixel cache {path}: {exc}")
    return result
