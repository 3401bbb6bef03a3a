"""Small TFLite/ONNX artifacts for the edge-runtime tests, made from the `tiny_run` fixture's model.

Uses `edgecxr convert`'s own API (the artifacts the runtime really meets, verified against Keras);
only where that package is absent does it convert the Keras model here with the same tools. Either way every artifact has real metadata next to it.

`gated_artifacts` gives copies whose feature reference is calibrated on more real X-rays than the
tiny run's validation split holds (convert rightly leaves the learned check off with 10 images);
`legacy_artifacts` gives single-output models as exported before the input gate.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

_BUILT: dict[Path, dict[str, Path]] = {}
_GATED: dict[Path, dict[str, Path]] = {}
_LEGACY: dict[Path, dict[str, Path]] = {}

ARTIFACTS = ("model_fp32.tflite", "model_int8.tflite", "model_fp32.onnx", "model_int8.onnx")


def edge_artifacts(run: Path) -> dict[str, Path]:
    """{'fp32.tflite': path, 'int8.tflite': path, 'fp32.onnx': path, ...} built once per session."""
    run = Path(run)
    if run not in _BUILT:
        _BUILT[run] = _convert_with_project(run) or _convert_here(run)
    return _BUILT[run]


def _key(name: str) -> str:
    return name.removeprefix("model_")


def _convert_with_project(run: Path) -> dict[str, Path] | None:
    try:
        from edgecxr.convert.exporter import ConvertOptions, convert_run
    except ImportError:
        return None
    # A one-epoch model's probabilities sit in a narrow band around its threshold, so its int8 files
    # would (rightly) fail convert's label-agreement check; the runtime tests need them anyway.
    options = ConvertOptions(run=run, quantize="int8", format="all", out=run / "edge_test_export",
                             calibration_size=32, verify=False)
    results = convert_run(options)
    built = {_key(r.name): Path(r.path) for r in results
             if r.status in ("ok", "unverified")}
    missing = [name for name in ARTIFACTS if _key(name) not in built]
    assert not missing, f"convert did not produce {missing}: {[r.error for r in results if r.error]}"
    return built


def gated_artifacts(run: Path, pool: Path) -> dict[str, Path]:
    """Copies of the int8 and fp32 artifacts whose feature reference is made by convert's own
    functions: bases on pool/fit/, thresholds and monitor sample on pool/calibration/ (220 images)."""
    run = Path(run)
    if run in _GATED:
        return _GATED[run]
    import keras

    from edgecxr.convert.calibration import ImageSet
    from edgecxr.convert.gate_reference import GateImages, artifact_reference, run_bases
    from edgecxr.edge_runtime.backends import open_backend
    from edgecxr.edge_runtime.feature_reference import INPUT_LAYOUT, MONITORED_COMPONENTS, input_layout
    from edgecxr.edge_runtime.formats import format_of_file
    from edgecxr.convert.monitor_nulls import training_layout_test
    from edgecxr.edge_runtime.metadata import metadata_path, read_metadata, write_metadata
    from edgecxr.edge_runtime.preprocessing import preprocess

    spec = read_metadata(run / "model.keras").preprocessing

    def inputs(folder: Path) -> tuple[np.ndarray, list[Path]]:
        paths = sorted(folder.iterdir())
        return np.stack([preprocess(p, spec) for p in paths]).astype(np.float32), paths

    fit, fit_paths = inputs(pool / "fit")
    calibration, paths = inputs(pool / "calibration")
    bases = run_bases(keras.models.load_model(run / "model.keras", compile=False), spec, fit)
    # The fit films stand in for the training split as the monitor's layout reference and null.
    layout = training_layout_test(bases[INPUT_LAYOUT].project(input_layout(fit))[:, :MONITORED_COMPONENTS],
                                  fit_paths, seed=0)
    images = GateImages(fit=None, calibration=ImageSet(calibration, np.zeros(len(paths), dtype=int),
                                                       [str(p) for p in paths], str(pool / "calibration")),
                        description={"seed": 0, "source": "tests: xray_pool"}, layout_test=layout)
    out = run / "gated_export"
    out.mkdir(exist_ok=True)
    built = {}
    for key, source in edge_artifacts(run).items():
        if format_of_file(source).takes == "frame":  # the phone graph exports no features to gate on
            continue
        target = out / source.name
        shutil.copy(source, target)
        shutil.copy(metadata_path(source), metadata_path(target))
        metadata = read_metadata(target)
        metadata.feature_reference = artifact_reference(open_backend(target).predict, bases, images)
        write_metadata(target, metadata)
        built[key] = target
    _GATED[run] = built
    return built


def legacy_artifacts(run: Path) -> dict[str, Path]:
    """fp32 and int8 TFLite and ONNX models with the probability as their only output and no feature
    reference in their metadata: what `edgecxr convert` wrote before the input gate."""
    run = Path(run)
    if run not in _LEGACY:
        _LEGACY[run] = _convert_here(run, "legacy_export")
    return _LEGACY[run]


def _representative_inputs(run: Path, spec, count: int = 32) -> np.ndarray:
    import json

    from edgecxr.edge_runtime.preprocessing import preprocess

    paths = json.loads((run / "split.json").read_text())["train"][:count]
    return np.stack([preprocess(p, spec) for p in paths]).astype(np.float32)


def _convert_here(run: Path, folder: str = "edge_test_export") -> dict[str, Path]:
    import keras
    import tensorflow as tf
    import tf2onnx

    from edgecxr.edge_runtime.metadata import read_metadata, write_metadata

    source = run / "model.keras"
    keras_md = read_metadata(source)
    model = keras.models.load_model(source, compile=False)
    out = run / folder
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    spec = keras_md.preprocessing
    calibration = _representative_inputs(run, spec)

    @tf.function(input_signature=[tf.TensorSpec([None, *spec.input_shape], tf.float32, name="image")])
    def serve(x):
        return model(x, training=False)

    saved_model = out / "saved_model"
    model.export(str(saved_model), format="tf_saved_model", verbose=False)
    built = {}

    def save(name: str, data: bytes, quantization: str, fmt: str) -> None:
        path = out / name
        path.write_bytes(data)
        md = read_metadata(source)
        md.format, md.quantization = fmt, quantization
        write_metadata(path, md)
        built[_key(name)] = path

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    save("model_fp32.tflite", converter.convert(), "none", "tflite")

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    save("model_int8.tflite", converter.convert(), "int8", "tflite")

    onnx_model, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=17)
    save("model_fp32.onnx", onnx_model.SerializeToString(), "none", "onnx")
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError:
        return built

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"image": x[None]} for x in calibration])

        def get_next(self):
            return next(self.items, None)

    int8_path = out / "model_int8.onnx"
    quantize_static(str(out / "model_fp32.onnx"), str(int8_path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    md = read_metadata(source)
    md.format, md.quantization = "onnx", "int8"
    write_metadata(int8_path, md)
    built["int8.onnx"] = int8_path
    return built


def write_resealed(model: Path, document: dict) -> None:
    """Write a hand-edited metadata document with a fresh seal: for tests of what the reader does with a
    field's value (an unsealed edit is refused before its fields are read; test_sealed_metadata.py)."""
    import json

    from edgecxr.edge_runtime.metadata import SEAL_KEY, metadata_path, seal_of

    document = {**document, SEAL_KEY: seal_of(document)}
    metadata_path(model).write_text(json.dumps(document))
