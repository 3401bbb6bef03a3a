"""TFLite model metadata for the mobile artifact: what MediaPipe Tasks and Android's ML binding read.

MediaPipe's own metadata writer does not import in mediapipe 1.2.x (it needs a compiled helper the
wheel lacks, only to compute `min_parser_version`), so the metadata is built here with the schema
classes MediaPipe ships (`metadata_schema_py_generated`, `schema_py_generated`) and packed as its
populator does: the metadata flatbuffer as a model buffer named TFLITE_METADATA, and the label file
in a zip appended to the model. Every field used is in schema 1.0.0 (the schema's own version
history), so that is the minimum parser version written.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
MODEL_IDENTIFIER = b"TFL3"
MIN_PARSER_VERSION = "1.0.0"  # ImageProperties, NormalizationOptions, ValueRange, TENSOR_AXIS_LABELS
LABEL_FILE = "labels.txt"


@dataclass(frozen=True)
class MobileDescription:
    name: str
    description: str  # intended use, the threshold to apply, what the app must still refuse
    version: str
    labels: tuple[str, ...]  # one per score, in output order
    input_description: str
    output_description: str
    author: str = "edgecxr"
    license: str = "Model: see the training data's licence (Kermany et al. 2018, CC BY 4.0)"


def schema_modules():
    try:
        from mediapipe.tasks.metadata import metadata_schema_py_generated as metadata_fb
        from mediapipe.tasks.metadata import schema_py_generated as model_fb
    except ImportError:
        raise ImportError("the mobile format needs MediaPipe's metadata schema: pip install 'edgecxr[mobile]'") from None
    return metadata_fb, model_fb


def tensor_metadata(fb, name: str, description: str, kind, properties, low: float, high: float):
    """One tensor's entry: its name, words, content kind and value range."""
    tensor = fb.TensorMetadataT()
    tensor.name, tensor.description = name, description
    tensor.content = fb.ContentT()
    tensor.content.contentPropertiesType, tensor.content.contentProperties = kind, properties
    tensor.stats = fb.StatsT()
    tensor.stats.min, tensor.stats.max = [low], [high]
    return tensor


def metadata_buffer(described: MobileDescription) -> bytes:
    import flatbuffers

    fb, _ = schema_modules()
    rgb = fb.ImagePropertiesT()
    rgb.colorSpace = fb.ColorSpaceType.RGB
    image = tensor_metadata(fb, "image", described.input_description, fb.ContentProperties.ImageProperties, rgb,
                            0.0, 255.0)
    # Raw 0..255 pixels go in: the graph scales them itself, so the app's normalisation is identity.
    normalization = fb.ProcessUnitT()
    normalization.optionsType = fb.ProcessUnitOptions.NormalizationOptions
    normalization.options = fb.NormalizationOptionsT()
    normalization.options.mean, normalization.options.std = [0.0], [1.0]
    image.processUnits = [normalization]

    scores = tensor_metadata(fb, "probability", described.output_description,
                             fb.ContentProperties.FeatureProperties, fb.FeaturePropertiesT(), 0.0, 1.0)
    labels = fb.AssociatedFileT()
    labels.name = LABEL_FILE
    labels.description = "Labels of the scores, in order."
    labels.type = fb.AssociatedFileType.TENSOR_AXIS_LABELS
    scores.associatedFiles = [labels]

    subgraph = fb.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image]
    subgraph.outputTensorMetadata = [scores]
    model = fb.ModelMetadataT()
    model.name, model.description, model.version = described.name, described.description, described.version
    model.author, model.license = described.author, described.license
    model.subgraphMetadata = [subgraph]
    model.minParserVersion = MIN_PARSER_VERSION
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), METADATA_IDENTIFIER)
    return bytes(builder.Output())


def with_metadata(model_bytes: bytes, described: MobileDescription) -> bytes:
    """The .tflite flatbuffer with its metadata buffer and, appended, the zip of its label file."""
    import flatbuffers

    _, model_fb = schema_modules()
    model = model_fb.ModelT.InitFromObj(model_fb.Model.GetRootAsModel(bytearray(model_bytes), 0))
    buffer = model_fb.BufferT()
    buffer.data = list(metadata_buffer(described))
    model.buffers.append(buffer)
    entry = model_fb.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()] + [entry]
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), MODEL_IDENTIFIER)
    packed = io.BytesIO()
    # Stored, not deflated: readers map associated files straight out of the model file.
    with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(LABEL_FILE, "".join(f"{label}\n" for label in described.labels))
    return bytes(builder.Output()) + packed.getvalue()


def read_description(model_bytes: bytes) -> dict:
    """The metadata's model name, description and labels, read back (tests, doctor)."""
    fb, model_fb = schema_modules()
    model = model_fb.Model.GetRootAsModel(bytearray(model_bytes), 0)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if entry.Name() == METADATA_NAME.encode():
            data = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
            meta = fb.ModelMetadata.GetRootAsModelMetadata(data, 0)
            with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
                labels = archive.read(LABEL_FILE).decode().split()
            return {"name": meta.Name().decode(), "description": meta.Description().decode(),
                    "min_parser_version": meta.MinParserVersion().decode(), "labels": labels}
    raise ValueError("the model has no TFLite metadata")
