"""The full Keras model behind the same interface as the edge runtime's backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.metadata import ModelMetadata, read_metadata


class KerasBackend:
    """Runs a saved `model.keras`; the reference every exported artifact is compared with."""

    format = "keras"

    def __init__(self, path: str | Path, trust: bool = False):
        import keras

        self.path = Path(path)
        self.metadata: ModelMetadata = read_metadata(self.path, verify_sha256=not trust)
        self.model = keras.models.load_model(self.path, compile=False)

    def predict_proba(self, inputs: np.ndarray) -> np.ndarray:
        """float32 (N, H, W, C) preprocessed inputs -> (N,) probability of the positive class."""
        outputs = self.model(np.asarray(inputs, dtype=np.float32), training=False)
        return np.asarray(outputs, dtype=np.float64).reshape(len(inputs), -1)[:, 0]


def open_any_model(path: str | Path, trust: bool = False, threads: int | None = None):
    """A Keras model here, or a TFLite/ONNX artifact through the edge runtime's own backends."""
    path = Path(path)
    if path.suffix == ".keras":
        return KerasBackend(path, trust=trust)
    from edgecxr.edge_runtime.backends import open_backend

    return open_backend(path, threads=threads, trust=trust)


def predict_proba_batched(backend, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return np.concatenate([backend.predict_proba(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)])
