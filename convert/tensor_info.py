"""Input/output tensor facts read from an artifact itself (never assumed) for its metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _tensor(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    facts = {"name": detail["name"], "dtype": np.dtype(detail["dtype"]).name,
             "shape": [int(d) for d in detail.get("shape_signature", detail["shape"])]}
    if scale:
        facts.update(scale=float(scale), zero_point=int(zero_point))
    return facts


def tflite_io(path: Path) -> dict:
    """The input, the probability output and (if any) the feature output of a .tflite file."""
    from edgecxr.edge_runtime.backends import output_roles, tflite_interpreter_class

    interpreter_class, _ = tflite_interpreter_class()
    interpreter = interpreter_class(model_path=str(path))
    outputs = interpreter.get_output_details()
    roles = output_roles([[int(d) for d in o.get("shape_signature", o["shape"])] for o in outputs])
    facts = {"input": _tensor(interpreter.get_input_details()[0]), "output": _tensor(outputs[roles.probability])}
    for role, index in (("features", roles.features), ("feature_map", roles.feature_map)):
        if index is not None:
            facts[role] = _tensor(outputs[index])
    return facts


def _qdq_params(model, tensor_name: str, consumer: bool) -> dict:
    """Scale and zero-point of the QuantizeLinear reading a graph input (or feeding an output)."""
    from onnx import numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        touches = node.input[0] == tensor_name if consumer else node.output[0] == tensor_name
        if touches and node.input[1] in initializers:
            scale = numpy_helper.to_array(initializers[node.input[1]])
            zero = numpy_helper.to_array(initializers[node.input[2]]) if len(node.input) > 2 else np.zeros(1)
            return {"scale": float(scale.reshape(-1)[0]), "zero_point": int(zero.reshape(-1)[0]),
                    "quantized_dtype": zero.dtype.name}
    return {}


def onnx_io(path: Path) -> dict:
    """The input, the probability output and (if any) the feature output of a .onnx file."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    from edgecxr.edge_runtime.backends import output_roles

    def shape(value) -> list:
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or -1) for d in value.type.tensor_type.shape.dim]

    model = onnx.load(str(path))
    facts = {"opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))}
    outputs = list(model.graph.output)
    found = output_roles([shape(o) for o in outputs])
    roles = [("input", model.graph.input[0], True), ("output", outputs[found.probability], False)]
    for role, index in (("features", found.features), ("feature_map", found.feature_map)):
        if index is not None:
            roles.append((role, outputs[index], False))
    for role, value, consumer in roles:
        facts[role] = {
            "name": value.name,
            "dtype": np.dtype(tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)).name,
            "shape": shape(value),
            **_qdq_params(model, value.name, consumer),
        }
    return facts


def ort_io(path: Path) -> dict:
    """The input and outputs of a .ort file, as onnxruntime reports them (the file is no ONNX protobuf)."""
    import onnxruntime as ort

    from edgecxr.edge_runtime.backends import output_roles

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.get_outputs()
    found = output_roles([list(o.shape) for o in outputs])

    def described(value) -> dict:
        dtype = value.type.replace("tensor(", "").rstrip(")").replace("float", "float32")
        return {"name": value.name, "dtype": dtype, "shape": [d if isinstance(d, int) else -1 for d in value.shape]}

    facts = {"input": described(session.get_inputs()[0]), "output": described(outputs[found.probability])}
    for role, index in (("features", found.features), ("feature_map", found.feature_map)):
        if index is not None:
            facts[role] = described(outputs[index])
    return facts


def mobile_io(path: Path) -> dict:
    """The frame input and the scores output of the mobile .tflite file."""
    from edgecxr.edge_runtime.backends import tflite_interpreter_class

    interpreter_class, _ = tflite_interpreter_class()
    interpreter = interpreter_class(model_path=str(path))
    return {"input": _tensor(interpreter.get_input_details()[0]), "output": _tensor(interpreter.get_output_details()[0])}
