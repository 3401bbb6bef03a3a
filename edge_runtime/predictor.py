"""A model plus its metadata: image in, label and probability of pneumonia out.

The predictor owns no preprocessing of its own: it calls `preprocessing.preprocess`, the same
definition training and conversion use, with the spec stored in the model's metadata.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .backends import open_backend
from .errors import EdgecxrError, ImageError
from .images import ImageSource
from .preprocessing import preprocess


@dataclass(frozen=True)
class Prediction:
    """One image's result; `error` is set (and label/probability are None) when it was skipped."""

    path: str
    label: str | None
    probability: float | None
    threshold: float
    latency_ms: float | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "label": self.label,
            "probability": self.probability,
            "threshold": self.threshold,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
            "error": self.error,
        }


def source_name(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return "<bytes>"
    if isinstance(source, np.ndarray):
        return "<array>"
    return "<image>"


class Predictor:
    """Backend + metadata. One interpreter (or session) serves every image it is given."""

    def __init__(self, backend, threshold: float | None = None):
        self.backend = backend
        self.metadata = backend.metadata
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise EdgecxrError(f"threshold must be in [0, 1], not {threshold}")
        self.threshold = self.metadata.threshold if threshold is None else float(threshold)
        labels = list(self.metadata.labels)
        self.positive_label = self.metadata.positive_label
        self.negative_label = next(label for label in labels if label != self.positive_label)

    @classmethod
    def open(cls, model_path: str | Path, threads: int | None = None, trust: bool = False,
             threshold: float | None = None) -> "Predictor":
        """Load a .tflite or .onnx model; its metadata must exist and (unless `trust`) match its sha256."""
        return cls(open_backend(model_path, threads=threads, trust=trust), threshold=threshold)

    @property
    def runtime(self) -> str:
        return self.backend.runtime

    @property
    def spec(self):
        return self.metadata.preprocessing

    def label_for(self, probability: float) -> str:
        return self.positive_label if probability >= self.threshold else self.negative_label

    def predict(self, source: ImageSource) -> Prediction:
        """Predict one image; a bad image raises ImageError with the reason."""
        started = time.perf_counter()
        inputs = preprocess(source, self.spec)[None]
        probability = float(self.backend.predict_proba(inputs)[0])
        latency_ms = (time.perf_counter() - started) * 1000.0
        return Prediction(source_name(source), self.label_for(probability), probability, self.threshold, latency_ms)

    def predict_many(self, sources: Iterable[ImageSource], batch_size: int = 1) -> Iterator[Prediction]:
        """Predict every source in order; a bad one yields a Prediction with `error` set, never raises.

        Images are decoded one by one and run `batch_size` at a time through the one backend.
        A result's latency is its own decoding time plus its share of the batch's inference time.
        """
        if batch_size < 1:
            raise EdgecxrError(f"batch size must be at least 1, not {batch_size}")
        batch: list[ImageSource] = []
        for source in sources:
            batch.append(source)
            if len(batch) == batch_size:
                yield from self._predict_batch(batch)
                batch = []
        if batch:
            yield from self._predict_batch(batch)

    def _predict_batch(self, sources: list[ImageSource]) -> list[Prediction]:
        results: list[Prediction | None] = [None] * len(sources)
        inputs, decode_ms, indices = [], [], []
        for index, source in enumerate(sources):
            started = time.perf_counter()
            try:
                inputs.append(preprocess(source, self.spec))
            except ImageError as exc:
                results[index] = self._skipped(source, str(exc))
                continue
            except MemoryError:
                results[index] = self._skipped(source, "not enough memory to decode it")
                continue
            except Exception as exc:  # noqa: BLE001 - one odd file must not stop a folder of results
                results[index] = self._skipped(source, f"cannot decode: {type(exc).__name__}: {exc}")
                continue
            decode_ms.append((time.perf_counter() - started) * 1000.0)
            indices.append(index)
        if inputs:
            started = time.perf_counter()
            probabilities = self.backend.predict_proba(np.stack(inputs))
            inference_ms = (time.perf_counter() - started) * 1000.0 / len(inputs)
            for index, probability, ms in zip(indices, probabilities, decode_ms):
                probability = float(probability)
                results[index] = Prediction(source_name(sources[index]), self.label_for(probability), probability,
                                            self.threshold, ms + inference_ms)
        return results

    def _skipped(self, source: ImageSource, reason: str) -> Prediction:
        return Prediction(source_name(source), None, None, self.threshold, None, reason)
