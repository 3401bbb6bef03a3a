"""Installed versions of the packages that shape a model's numbers (read without importing them)."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("edgecxr", "numpy", "pillow", "tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx",
            "onnxruntime", "ai-edge-litert", "tflite-runtime")


def package_versions(packages=PACKAGES) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
