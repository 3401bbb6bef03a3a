"""Installed versions of the packages that shape a model's numbers (read without importing them)."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("edgecxr", "numpy", "pillow", "tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx",
            "onnxruntime", "ai-edge-litert", "tflite-runtime")


def package_version(name: str) -> str | None:
    """The installed version of distribution `name`, None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def package_versions(packages=PACKAGES) -> dict[str, str]:
    found = {"python": platform.python_version()}
    found.update({name: version for name in packages if (version := package_version(name))})
    return found
