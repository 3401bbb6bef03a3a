"""Inference backends with one interface: a decoded film becomes the graph's input (`prepare`), and
inputs go in, P(pneumonia) out, plus the model's penultimate features where the graph exports them
(the input gate and site monitor). Most graphs take the preprocessed tensor; the mobile graph takes
a uint8 frame and preprocesses inside.

TFLite runs on LiteRT (`ai-edge-litert`), falling back to `tflite-runtime`; ONNX runs on
onnxruntime. int8 input/output quantization is read from the model's own tensor details,
never assumed, so a re-calibrated model cannot be fed with stale scales.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import EdgecxrError, MetadataError, MissingDependencyError
from .formats import EDGE_SUFFIXES, EXPORT_FORMATS, format_of_file, runtime_of
from .metadata import ModelMetadata, read_metadata
from .native_logs import runtime_logs_silenced
from .preprocessing import frame_input, preprocess

BACKENDS: dict[str, type] = {}


def register_backend(cls):
    """Register a backend class under its `format` (a name in the format table)."""
    BACKENDS[cls.format] = cls
    return cls


def tflite_interpreter_class():
    """(Interpreter class, package name): LiteRT first, then the legacy tflite-runtime (the table's order)."""
    for package, module in runtime_of("tflite").packages:
        try:
            return importlib.import_module(module).Interpreter, package
        except ImportError:
            continue
    raise MissingDependencyError(
        "no TFLite runtime installed: pip install ai-edge-litert (64-bit Linux/macOS, Python 3.10+), "
        "or tflite-runtime with 'numpy<2' on 32-bit Raspberry Pi OS"
    )


def numpy_hint(runtime: str) -> str:
    """tflite-runtime 2.14 (the last 32-bit Pi wheel) was built against NumPy 1 and fails under NumPy 2."""
    if runtime != "tflite-runtime" or int(np.__version__.split(".")[0]) < 2:
        return ""
    return f" (tflite-runtime needs NumPy 1, found {np.__version__}: pip install 'numpy<2')"


@dataclass(frozen=True)
class OutputRoles:
    """Which of a graph's outputs is which (an index each; None where the graph lacks it)."""

    probability: int
    features: int | None = None
    feature_map: int | None = None


@dataclass(frozen=True)
class Inference:
    """What one run of the graph gives for a batch: (N,) probabilities, (N, D) pooled features and
    (N, h, w, D) feature maps (None where the graph exports none)."""

    probabilities: np.ndarray
    features: np.ndarray | None = None
    feature_maps: np.ndarray | None = None


def output_roles(shapes: list[list]) -> OutputRoles:
    """Each output's role from the output shapes.

    Converters order outputs by name or tensor index, not as the model declared them, so each is
    recognised by its shape: the probability has one value per image, the features (the global
    average pooling) many, and the feature map they pool is 4-D. A model exported before the
    feature output has the probability alone; one exported before the heat-map output, no map.
    """
    if len(shapes) == 1:  # the probability alone, whatever shape the converter recorded
        return OutputRoles(0)

    def width(shape) -> int | None:
        last = shape[-1] if len(shape) >= 2 else None
        return last if isinstance(last, (int, np.integer)) and last > 0 else None

    probability = [i for i, shape in enumerate(shapes) if len(shape) <= 2 and width(shape) == 1]
    features = [i for i, shape in enumerate(shapes) if len(shape) == 2 and (width(shape) or 0) > 1]
    maps = [i for i, shape in enumerate(shapes) if len(shape) == 4]
    if len(probability) != 1 or len(features) > 1 or len(maps) > 1 or (maps and not features) \
            or len(probability) + len(features) + len(maps) != len(shapes):
        raise EdgecxrError(f"the model's outputs {shapes} are not a probability (one value per image), "
                           f"optionally one feature vector per image and the feature map it pools")
    return OutputRoles(probability[0], features[0] if features else None, maps[0] if maps else None)


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (values.astype(np.float32) - zero_point) * scale


@register_backend
class TFLiteBackend:
    format = "tflite"
    takes_frames = False  # True for a graph that preprocesses inside (its `prepare` makes a frame)

    def __init__(self, path: str | Path, threads: int | None = None, trust: bool = False,
                 metadata: ModelMetadata | None = None):
        self.path = Path(path)
        self.metadata = metadata or read_metadata(self.path, verify_sha256=not trust)
        interpreter_class, self.runtime = tflite_interpreter_class()
        try:
            with runtime_logs_silenced():  # the XNNPACK delegate announces itself here
                self.interpreter = interpreter_class(model_path=str(self.path), num_threads=threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError, SystemError, ImportError) as exc:
            raise EdgecxrError(f"{self.path.name}: {self.runtime} cannot load it: {exc}{numpy_hint(self.runtime)}") from None
        details = self.interpreter.get_output_details()
        shapes = [[int(d) for d in detail.get("shape_signature", detail["shape"])] for detail in details]
        try:
            self.roles = output_roles(shapes)
        except EdgecxrError as exc:
            raise EdgecxrError(f"{self.path.name}: {exc}") from None
        self._read_details()

    def _read_details(self) -> None:
        self.input = self.interpreter.get_input_details()[0]
        details = self.interpreter.get_output_details()
        self.output = details[self.roles.probability]
        self.feature_output = None if self.roles.features is None else details[self.roles.features]
        self.map_output = None if self.roles.feature_map is None else details[self.roles.feature_map]

    def prepare(self, image) -> np.ndarray:
        """A decoded film (PIL image, path or bytes) -> this graph's input for one image."""
        return preprocess(image, self.metadata.preprocessing)

    @property
    def expected_input_hwc(self) -> list:
        return list(self.metadata.preprocessing.input_shape)

    @property
    def input_dtype(self) -> str:
        return np.dtype(self.input["dtype"]).name

    @property
    def input_hwc(self) -> list:
        return [int(d) for d in self.input["shape"][1:]]

    @property
    def feature_dim(self) -> int | None:
        """Length of the feature vector the graph exports, or None for a probability-only model."""
        return None if self.feature_output is None else int(self.feature_output["shape"][-1])

    def _ensure_batch(self, batch: int) -> None:
        if int(self.input["shape"][0]) != batch:
            shape = [batch, *[int(d) for d in self.input["shape"][1:]]]
            with runtime_logs_silenced():
                self.interpreter.resize_tensor_input(self.input["index"], shape)
                self.interpreter.allocate_tensors()
            self._read_details()

    @property
    def has_feature_map(self) -> bool:
        return self.map_output is not None

    def _read(self, detail: dict, batch: int, flat: bool = True) -> np.ndarray:
        raw = self.interpreter.get_tensor(detail["index"])
        if np.dtype(detail["dtype"]) in (np.int8, np.uint8):
            scale, zero_point = detail["quantization"]
            raw = dequantize(raw, scale, zero_point)
        return raw.astype(np.float64).reshape(batch, -1) if flat else raw.astype(np.float32)

    def _invoke(self, inputs: np.ndarray) -> int:
        inputs = np.asarray(inputs, dtype=np.float32)
        self._ensure_batch(len(inputs))
        dtype = np.dtype(self.input["dtype"])
        if dtype in (np.int8, np.uint8):
            scale, zero_point = self.input["quantization"]
            inputs = quantize(inputs, scale, zero_point, dtype)
        self.interpreter.set_tensor(self.input["index"], inputs)
        self.interpreter.invoke()
        return len(inputs)

    def predict_proba(self, inputs: np.ndarray) -> np.ndarray:
        """float32 (N, H, W, C) preprocessed inputs -> (N,) probability of the positive class."""
        batch = self._invoke(inputs)
        return self._read(self.output, batch)[:, 0]

    def predict(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N,) probabilities and (N, D) features (None when the graph exports none), one invocation."""
        batch = self._invoke(inputs)
        features = None if self.feature_output is None else self._read(self.feature_output, batch)
        return self._read(self.output, batch)[:, 0], features

    def infer(self, inputs: np.ndarray, feature_maps: bool = False) -> Inference:
        """Probabilities, features and (when asked and exported) feature maps of one invocation."""
        batch = self._invoke(inputs)
        features = None if self.feature_output is None else self._read(self.feature_output, batch)
        maps = self._read(self.map_output, batch, flat=False) if feature_maps and self.has_feature_map else None
        return Inference(self._read(self.output, batch)[:, 0], features, maps)


@register_backend
class OnnxBackend:
    format = "onnx"
    takes_frames = False
    runtime = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, trust: bool = False,
                 metadata: ModelMetadata | None = None):
        try:
            with runtime_logs_silenced():
                import onnxruntime as ort
        except ImportError:
            raise MissingDependencyError("onnxruntime is not installed: pip install onnxruntime") from None
        self.path = Path(path)
        self.metadata = metadata or read_metadata(self.path, verify_sha256=not trust)
        ort.set_default_logger_severity(3)  # errors only: its warnings are not the user's business
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            with runtime_logs_silenced():
                self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise EdgecxrError(f"{self.path.name}: onnxruntime cannot load it: {str(exc).splitlines()[0]}") from None
        self.input_name = self.session.get_inputs()[0].name
        outputs = self.session.get_outputs()
        try:
            roles = output_roles([list(o.shape) for o in outputs])
        except EdgecxrError as exc:
            raise EdgecxrError(f"{self.path.name}: {exc}") from None
        self.output_name = outputs[roles.probability].name
        self.feature_name = None if roles.features is None else outputs[roles.features].name
        self.feature_dim = None if roles.features is None else int(outputs[roles.features].shape[-1])
        self.map_name = None if roles.feature_map is None else outputs[roles.feature_map].name

    @property
    def has_feature_map(self) -> bool:
        return self.map_name is not None

    def prepare(self, image) -> np.ndarray:
        return preprocess(image, self.metadata.preprocessing)

    @property
    def expected_input_hwc(self) -> list:
        return list(self.metadata.preprocessing.input_shape)

    @property
    def input_dtype(self) -> str:
        return self.session.get_inputs()[0].type.replace("tensor(", "").rstrip(")")

    @property
    def input_hwc(self) -> list:
        return list(self.session.get_inputs()[0].shape[1:])  # a symbolic axis is a name, not an int

    def predict_proba(self, inputs: np.ndarray) -> np.ndarray:
        inputs = np.asarray(inputs, dtype=np.float32)
        (raw,) = self.session.run([self.output_name], {self.input_name: inputs})
        return np.asarray(raw, dtype=np.float64).reshape(len(inputs), -1)[:, 0]

    def predict(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N,) probabilities and (N, D) features (None when the graph exports none), one run."""
        inputs = np.asarray(inputs, dtype=np.float32)
        if self.feature_name is None:
            return self.predict_proba(inputs), None
        raw, features = self.session.run([self.output_name, self.feature_name], {self.input_name: inputs})
        return (np.asarray(raw, dtype=np.float64).reshape(len(inputs), -1)[:, 0],
                np.asarray(features, dtype=np.float64).reshape(len(inputs), -1))

    def infer(self, inputs: np.ndarray, feature_maps: bool = False) -> Inference:
        """Probabilities, features and (when asked and exported) feature maps of one run."""
        inputs = np.asarray(inputs, dtype=np.float32)
        names = [self.output_name] + [n for n in (self.feature_name,) if n is not None]
        if feature_maps and self.map_name is not None:
            names.append(self.map_name)
        values = dict(zip(names, self.session.run(names, {self.input_name: inputs})))
        n = len(inputs)
        features = values.get(self.feature_name)
        maps = values.get(self.map_name) if self.map_name is not None else None
        return Inference(np.asarray(values[self.output_name], dtype=np.float64).reshape(n, -1)[:, 0],
                         None if features is None else np.asarray(features, dtype=np.float64).reshape(n, -1),
                         None if maps is None else np.asarray(maps, dtype=np.float32))


@register_backend
class OrtBackend(OnnxBackend):
    """ORT Mobile's format: onnxruntime loads the .ort flatbuffer as it loads .onnx."""

    format = "ort"


@register_backend
class MobileBackend(TFLiteBackend):
    """The mobile TFLite graph: one uint8 RGB frame in, preprocessed inside, class scores out."""

    format = "mobile"
    takes_frames = True

    def __init__(self, path: str | Path, threads: int | None = None, trust: bool = False,
                 metadata: ModelMetadata | None = None):
        super().__init__(path, threads=threads, trust=trust, metadata=metadata)
        self.positive = list(self.metadata.labels).index(self.metadata.positive_label)

    @property
    def frame(self) -> tuple[int, int]:
        frame = self.metadata.details.get("frame") if isinstance(self.metadata.details, dict) else None
        if not isinstance(frame, dict):
            raise MetadataError(f"{self.path.name}: its metadata says the mobile format but gives no frame size")
        return int(frame["height"]), int(frame["width"])

    def prepare(self, image) -> np.ndarray:
        return frame_input(image, *self.frame)

    @property
    def expected_input_hwc(self) -> list:
        return [*self.frame, 3]

    def _scores(self, frames: np.ndarray) -> np.ndarray:
        """Each frame on its own: phone runtimes (MediaPipe) take batch 1, and so does the graph."""
        frames = np.asarray(frames, dtype=np.uint8)
        scores = []
        for frame in frames:
            self.interpreter.set_tensor(self.input["index"], frame[None])
            self.interpreter.invoke()
            scores.append(self.interpreter.get_tensor(self.output["index"])[0, self.positive])
        return np.asarray(scores, dtype=np.float64)

    def predict_proba(self, inputs: np.ndarray) -> np.ndarray:
        return self._scores(inputs)

    def predict(self, inputs: np.ndarray) -> tuple[np.ndarray, None]:
        return self._scores(inputs), None

    def infer(self, inputs: np.ndarray, feature_maps: bool = False) -> Inference:
        return Inference(self._scores(inputs))


def backend_class(path: str | Path):
    """The registered backend for a model file: by its table name (model_int8_mobile.tflite), else by
    its suffix; None when no format of the table has it. `open_backend` goes by the metadata instead."""
    row = format_of_file(path)
    if row is not None:
        return BACKENDS[row.format]
    suffix = Path(path).suffix.lower()
    return next((BACKENDS[f.format] for f in EXPORT_FORMATS if f.suffix == suffix), None)


def open_backend(path: str | Path, threads: int | None = None, trust: bool = False):
    """The backend for a .tflite or .onnx file, with its metadata checked against the file."""
    path = Path(path)
    if not path.exists():  # a mistyped path, not a wrong format: say so
        raise EdgecxrError(f"model file not found: {path}")
    backend = backend_class(path)
    if backend is None:
        raise EdgecxrError(
            f"{path.name}: the edge runtime runs {' and '.join(EDGE_SUFFIXES)} models "
            f"(a .keras model needs the [train] extra: edgecxr evaluate)"
        )
    metadata = read_metadata(path, verify_sha256=not trust)
    # The metadata, sealed, says which graph this is: a renamed mobile model is still one.
    backend = BACKENDS.get(metadata.format, backend)
    opened = backend(path, threads=threads, trust=trust, metadata=metadata)
    check_input_shape(opened)
    return opened


def check_input_shape(backend) -> None:
    """The graph's input must be what the metadata's preprocessing makes: otherwise every film would fail
    inside the runtime (an edited or mismatched metadata file), so the model is refused once, here."""
    expected = backend.expected_input_hwc
    found = backend.input_hwc
    if len(found) != len(expected) or any(isinstance(f, int) and f != e for f, e in zip(found, expected)):
        raise MetadataError(f"{backend.path.name} takes input {'x'.join(map(str, found))}, but its metadata's "
                            f"preprocessing makes {'x'.join(map(str, expected))}: the metadata belongs to another "
                            f"model; re-export it")
