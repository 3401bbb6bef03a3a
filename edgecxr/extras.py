"""Say which extra to install when a command needs packages the base (edge) install lacks."""

from __future__ import annotations

import importlib.util

from edgecxr.edge_runtime.errors import MissingDependencyError

EXTRA_MODULES = {
    "train": ("tensorflow", "keras", "matplotlib"),
    "convert": ("tensorflow", "keras", "tf2onnx", "onnx"),
}


def require_extra(command: str, extra: str = "train", modules: tuple[str, ...] | None = None) -> None:
    """Fail with one line naming the extra unless `modules` (default: the command's list) can be imported."""
    if modules is None:
        modules = EXTRA_MODULES.get(command, EXTRA_MODULES["train"])
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(
            f"'edgecxr {command}' needs {', '.join(missing)}, which the base (edge runtime) install leaves out; "
            f"install the extra: pip install 'edgecxr[{extra}]'"
        )
