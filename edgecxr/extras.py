"""Say which extra to install when a command needs packages the base (edge) install lacks."""

from __future__ import annotations

import importlib.util

from edgecxr.edge_runtime.errors import MissingDependencyError

EXTRA_MODULES = {
    "train": ("tensorflow", "keras", "matplotlib"),
    "convert": ("tensorflow", "keras", "tf2onnx", "onnx"),
}


def require_extra(command: str, extra: str = "train") -> None:
    missing = [m for m in EXTRA_MODULES.get(command, EXTRA_MODULES["train"]) if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(
            f"'edgecxr {command}' needs {', '.join(missing)}, which the base (edge runtime) install leaves out; "
            f"install the extra: pip install 'edgecxr[{extra}]'"
        )
