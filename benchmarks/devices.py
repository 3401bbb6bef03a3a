"""The devices `edgecxr bench --device` knows, and how each one sets up every runtime.

Only the CPU is supported today. A device is a name plus the way each runtime opens a model on
it, so a GPU, a Coral Edge TPU or an NNAPI delegate is one more entry here: the worker, the
rows and bench.json stay the same (a row records the device it ran on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgecxr.edge_runtime.errors import EdgecxrError


@dataclass(frozen=True)
class Device:
    name: str
    description: str

    def open_edge_model(self, path: Path, threads: int):
        """A TFLite/ONNX backend for `path` placed on this device."""
        from edgecxr.edge_runtime.backends import open_backend

        # The CPU uses each runtime's defaults: XNNPACK kernels for LiteRT, the CPU execution
        # provider for onnxruntime. Another device would pass its delegate or provider here.
        return open_backend(path, threads=threads)

    def configure_tensorflow(self, threads: int) -> None:
        """Pin TensorFlow to this device and thread count; call before the first TF op runs."""
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


DEVICES: dict[str, Device] = {
    "cpu": Device("cpu", "CPU: LiteRT default kernels (XNNPACK), onnxruntime CPUExecutionProvider, TensorFlow CPU"),
}


def get_device(name: str) -> Device:
    try:
        return DEVICES[name.lower()]
    except KeyError:
        supported = ", ".join(DEVICES)
        raise EdgecxrError(f"unsupported --device {name!r}; supported: {supported}") from None
