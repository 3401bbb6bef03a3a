"""A model plus its metadata: image in, label and probability of pneumonia out, or `not_cxr`.

The predictor owns no preprocessing of its own: its backend's `prepare` calls `preprocessing.preprocess`,
the same definition training and conversion use, with the spec stored in the model's metadata (or,
for the mobile graph that preprocesses inside, makes the frame a phone would hand it).

Before any label, the input gate (gate.py) decides whether the image can be a chest X-ray: cheap
checks on the decoded picture, then, where the model carries a feature reference, a learned check
on the features of the same inference. A refused image gets the label `not_cxr` and the reason,
never NORMAL or PNEUMONIA.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from itertools import chain, islice
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from .backends import open_backend
from .batching import decode_window, decode_workers
from .errors import EdgecxrError, ImageError
from .gate import ANALYSIS_SIDE, NOT_CXR, Gate
from .heatmap import DEFAULT_PATCHES, HeatMap, choose_method, class_activation_map, input_box, occlusion_map
from .images import ImageSource, image_warnings, open_image, to_grayscale
from .preprocessing import smallest_source_side
from .text_cells import printable


# Below this a film's decode, gate and preprocessing (224x224 JPEGs: about 1 ms) cost less than handing
# it to a thread: measured 2026-12-03 over test/, two threads took 0.2 ms more CPU a film for 15 % less
# wall time. Full-size films (2,000 px JPEGs: about 11 ms, measured the same day) gain from one thread per core.
PARALLEL_DECODE_MS = 4.0


@dataclass(frozen=True)
class _Decoded:
    """One source after decoding: its model input, or why it was refused or skipped."""

    source: ImageSource
    model_input: np.ndarray | None = None
    reason: str | None = None  # refused by the cheap input checks
    decode_ms: float | None = None
    error: str | None = None  # unreadable: skipped
    warnings: tuple[str, ...] = ()  # what the decoder noticed but did not refuse
    image: Image.Image | None = None  # the decoded film, kept only when a heat map will be drawn over it


@dataclass(frozen=True)
class Prediction:
    """One image's result. Skipped (unreadable): `error` set, label None. Refused by the input gate:
    label `not_cxr`, `reason` set, no probability. Otherwise a label and its probability."""

    path: str
    label: str | None
    probability: float | None
    threshold: float
    latency_ms: float | None
    error: str | None = None
    reason: str | None = None  # why the input gate refused it
    # Distance to the training X-rays in units of the refusal threshold, the larger of the learned
    # check's two views (above 1: refused); None where the model carries no calibrated reference.
    gate_distance: float | None = None
    # The image along the reference's monitored components: what the site monitor compares.
    projection: tuple[float, ...] | None = field(default=None, repr=False, compare=False)
    # Said alongside the result, never a failure: e.g. a DICOM film whose modality is not CR/DX.
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def refused(self) -> bool:
        return self.label == NOT_CXR

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "label": self.label,
            "probability": self.probability,
            "threshold": self.threshold,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
            "error": self.error,
            "reason": self.reason,
            "gate_distance": None if self.gate_distance is None else round(self.gate_distance, 4),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class Analysis:
    """One film's whole pass: its prediction, the decoded film (None if unreadable) and, when asked
    for an accepted film, its heat map (or why none could be drawn)."""

    prediction: Prediction
    image: Image.Image | None = None
    heat: HeatMap | None = None
    heat_problem: str | None = None


def single_threaded_blas() -> None:
    """Hold numpy's BLAS to one thread for the rest of the process. The runtime's matrix products are
    small (the gate's projections, a few thousand numbers a film) and OpenBLAS's idle threads spin
    between them: measured 2026-12-03, `edgecxr predict` over test/ took 2.8 CPU s with them and 1.5
    without, the same wall time. The model's own threads are the runtime's (--threads)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a hand-made install without it (--no-deps) runs as before, only costlier
        return
    threadpool_limits(limits=1, user_api="blas")


def source_name(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return printable(source)
    if isinstance(source, (bytes, bytearray)):
        return "<bytes>"
    if isinstance(source, np.ndarray):
        return "<array>"
    return "<image>"


class Predictor:
    """Backend + metadata. One interpreter (or session) serves every image it is given."""

    def __init__(self, backend, threshold: float | None = None, reduced_decode: bool = False):
        self.backend = backend
        self.metadata = backend.metadata
        # Opt-in: a large JPEG decoded at reduced scale, never below what the preprocessing resizes
        # from (with margin) nor below the input checks' analysis size. Off by default: on 626
        # full-size films it changed int8 labels at the threshold (compact 2, Lite0 12) and a gate
        # refusal (benchmarks/measure/decode_speed.py, docs/results/full-size-films.md#full-size-films-decode-speed).
        self.reduce_to = (max(smallest_source_side(self.metadata.preprocessing), ANALYSIS_SIDE)
                          if reduced_decode else None)
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise EdgecxrError(f"threshold must be in [0, 1], not {threshold}")
        self.threshold = self.metadata.threshold if threshold is None else float(threshold)
        labels = list(self.metadata.labels)
        self.positive_label = self.metadata.positive_label
        self.negative_label = next(label for label in labels if label != self.positive_label)
        # One interpreter serves every film, and an interpreter runs one call at a time: `analyse` may be
        # called from several threads (the station's), so its inference takes this lock; decoding does not.
        self._backend_lock = threading.Lock()
        self.gate = Gate(self.metadata.feature_reference, getattr(backend, "feature_dim", None),
                         self.metadata.model_file or "the model", getattr(backend, "takes_frames", False))

    @property
    def reference(self):
        """The feature reference the learned check and the site monitor use (None: neither runs)."""
        return self.gate.reference

    @property
    def learned_check(self) -> str:
        return self.gate.learned_status

    @classmethod
    def open(cls, model_path: str | Path, threads: int | None = None, trust: bool = False,
             threshold: float | None = None, reduced_decode: bool = False) -> "Predictor":
        """Load a .tflite or .onnx model; its metadata must exist and (unless `trust`) match its sha256 and
        seal. With `trust` it says so on stderr every time: a station left running that way must not be silent."""
        single_threaded_blas()
        predictor = cls(open_backend(model_path, threads=threads, trust=trust), threshold=threshold,
                        reduced_decode=reduced_decode)
        if not predictor.metadata.sealed:
            from .console import console

            console.print(f"[yellow]warning: {Path(model_path).name}'s metadata is unsealed (written before "
                          f"edgecxr sealed it): an edit to it would go unnoticed; re-export the model to seal "
                          f"it[/yellow]", highlight=False, soft_wrap=True)
        if trust:
            from .console import console

            found = "; ".join(predictor.metadata.unverified) or "its sha256 and seal match today"
            console.print(f"[yellow]warning: --trust: {Path(model_path).name} runs unchecked: {found}[/yellow]",
                          highlight=False, soft_wrap=True)
        return predictor

    @property
    def runtime(self) -> str:
        return self.backend.runtime

    @property
    def spec(self):
        return self.metadata.preprocessing

    def label_for(self, probability: float) -> str:
        return self.positive_label if probability >= self.threshold else self.negative_label

    def predict(self, source: ImageSource) -> Prediction:
        """Predict one image (or refuse it: label `not_cxr`); an unreadable image raises ImageError."""
        item = self._decode(source, raise_errors=True)
        with self._backend_lock:
            return self._run_batch([item])[0][0]

    def analyse(self, source: ImageSource, heatmap: str | None = None, patches: int = DEFAULT_PATCHES) -> Analysis:
        """One film's pass for a page: decoded once, gated, preprocessed once, inferred once, and (with
        `heatmap` "cam" or "occlusion") its heat map; an unreadable image raises ImageError."""
        method = choose_method(heatmap, self) if heatmap is not None else None
        item = self._decode(source, raise_errors=True, keep_image=True)  # decoding needs no lock
        with self._backend_lock:
            return self._analysed(item, *self._run_batch([item], feature_maps=method == "cam")[0], method, patches)

    def predict_many(self, sources: Iterable[ImageSource], batch_size: int = 1,
                     workers: int | None = 1) -> Iterator[Prediction]:
        """Predict every source in order; a bad one yields a Prediction with `error` set, never raises.

        Images are decoded by `workers` threads (Pillow releases the GIL while it decodes and
        resizes) and run `batch_size` at a time through the one backend, in the order given. At
        most `batching.decode_window` decoded inputs wait at any time, so memory stays bounded
        however long the folder. A result's latency is its own decoding time plus its share of the
        batch's inference time. `workers=None` decides from the first two films: one thread per core
        when the faster took at least PARALLEL_DECODE_MS to decode (full-size films), else one.
        """
        for analysis in self.analyse_many(sources, batch_size, workers):
            yield analysis.prediction

    def analyse_many(self, sources: Iterable[ImageSource], batch_size: int = 1, workers: int | None = 1,
                     heatmap: str | None = None, patches: int = DEFAULT_PATCHES) -> Iterator[Analysis]:
        """`predict_many`'s pass, each film's Analysis in order; with `heatmap`, each accepted film's map
        comes from its own inference (cam) or its already-preprocessed input (occlusion)."""
        if batch_size < 1:
            raise EdgecxrError(f"batch size must be at least 1, not {batch_size}")
        if workers is not None and workers < 1:
            raise EdgecxrError(f"workers must be at least 1, not {workers}")
        method = choose_method(heatmap, self) if heatmap is not None else None
        keep = method is not None

        def decode(source):
            return self._decode(source, keep_image=keep)

        sources, head = iter(sources), []
        if workers is None:  # auto: threads only where decoding, not the model, is the film's cost
            # Two films, the faster one counted: the first decode also pays Pillow's plugin start-up.
            head = [decode(source) for source in islice(sources, 2)]
            fastest = min((item.decode_ms for item in head if item.decode_ms is not None), default=0.0)
            workers = decode_workers() if fastest >= PARALLEL_DECODE_MS else 1
        if workers == 1:
            yield from self._in_batches(chain(head, (decode(source) for source in sources)), batch_size, method,
                                        patches)
            return
        window = decode_window(self.spec.input_shape, batch_size, workers)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgecxr-decode") as pool:
            pending: deque = deque()

            def decoded():
                yield from head
                for source in sources:
                    pending.append(pool.submit(decode, source))
                    if len(pending) >= window:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()

            try:
                yield from self._in_batches(decoded(), batch_size, method, patches)
            finally:
                for future in pending:  # a caller that stops early does not wait for the rest
                    future.cancel()

    def _in_batches(self, decoded: Iterable["_Decoded"], batch_size: int, method: str | None,
                    patches: int) -> Iterator[Analysis]:
        batch: list[_Decoded] = []
        for item in decoded:
            batch.append(item)
            if len(batch) == batch_size:
                yield from self._analysed_batch(batch, method, patches)
                batch = []
        if batch:
            yield from self._analysed_batch(batch, method, patches)

    def _analysed_batch(self, items: list["_Decoded"], method: str | None, patches: int) -> Iterator[Analysis]:
        for item, (prediction, feature_map, features) in zip(items, self._run_batch(items, method == "cam")):
            yield self._analysed(item, prediction, feature_map, features, method, patches)

    def _analysed(self, item: "_Decoded", prediction: Prediction, feature_map, features, method: str | None,
                  patches: int) -> Analysis:
        if method is None or not prediction.ok or prediction.refused:
            return Analysis(prediction, item.image)
        box = input_box(item.image, self.spec.crop)
        try:
            if method == "cam":
                heat = class_activation_map(self, feature_map, features, prediction.probability, item.image.size, box)
            else:
                heat = occlusion_map(self, item.model_input, prediction.probability, item.image.size, box, patches)
        except EdgecxrError as exc:  # the answer stands without its picture
            return Analysis(prediction, item.image, heat_problem=str(exc))
        return Analysis(prediction, item.image, heat)

    def _decode(self, source: ImageSource, raise_errors: bool = False, keep_image: bool = False) -> "_Decoded":
        """Decode, gate-check and preprocess one source: safe to call from several threads."""
        started = time.perf_counter()
        try:
            image = open_image(source, reduce_to=self.reduce_to)
            gray = to_grayscale(image)  # once, for the gate and the preprocessing
            reason = self.gate.cheap_check(image, gray)
            model_input = self.backend.prepare(gray) if reason is None else None
        except ImageError as exc:
            if raise_errors:
                raise
            return _Decoded(source, error=str(exc))
        except MemoryError:
            if raise_errors:
                raise ImageError("not enough memory to decode it") from None
            return _Decoded(source, error="not enough memory to decode it")
        except Exception as exc:  # noqa: BLE001 - one odd file must not stop a folder of results
            if raise_errors:
                raise ImageError(f"cannot decode: {type(exc).__name__}: {exc}") from None
            return _Decoded(source, error=f"cannot decode: {type(exc).__name__}: {exc}")
        return _Decoded(source, model_input, reason, (time.perf_counter() - started) * 1000.0,
                        warnings=image_warnings(image), image=image if keep_image else None)

    def _run_batch(self, items: list["_Decoded"], feature_maps: bool = False) -> list[tuple]:
        """(Prediction, feature map or None, features or None) per item, from one inference of the accepted."""
        results: list[tuple | None] = [None] * len(items)
        inputs, decode_ms, indices = [], [], []
        for index, item in enumerate(items):
            if item.error is not None:
                results[index] = (self._skipped(item.source, item.error), None, None)
            elif item.reason is not None:
                results[index] = (replace(self._refused(item.source, item.reason, item.decode_ms),
                                          warnings=item.warnings), None, None)
            else:
                inputs.append(item.model_input)
                decode_ms.append(item.decode_ms)
                indices.append(index)
        if inputs:
            started = time.perf_counter()
            batch = np.stack(inputs)
            inference = self.backend.infer(batch, feature_maps=feature_maps)
            features = inference.features
            reasons, distances, projections = self.gate.learned(features, batch)
            inference_ms = (time.perf_counter() - started) * 1000.0 / len(inputs)
            for position, (index, probability, ms) in enumerate(zip(indices, inference.probabilities, decode_ms)):
                source = items[index].source
                distance = None if distances is None else float(distances[position])
                maps = (None if inference.feature_maps is None else inference.feature_maps[position],
                        None if features is None else features[position])
                if reasons[position] is not None:
                    results[index] = (replace(self._refused(source, reasons[position], ms + inference_ms, distance),
                                              warnings=items[index].warnings), None, None)
                    continue
                probability = float(probability)
                projection = None if projections is None else tuple(float(v) for v in projections[position])
                results[index] = (Prediction(source_name(source), self.label_for(probability), probability,
                                             self.threshold, ms + inference_ms, gate_distance=distance,
                                             projection=projection, warnings=items[index].warnings), *maps)
        return results

    def _refused(self, source: ImageSource, reason: str, latency_ms: float,
                 distance: float | None = None) -> Prediction:
        return Prediction(source_name(source), NOT_CXR, None, self.threshold, latency_ms, reason=reason,
                          gate_distance=distance)

    def _skipped(self, source: ImageSource, reason: str) -> Prediction:
        return Prediction(source_name(source), None, None, self.threshold, None, reason)

