"""Say which extra to install when a command needs packages the base (edge) install lacks, and load them.

It lives with the edge runtime because the base install is where the message is needed. It loads
only modules a training-side command names (never on the Pi's predict/doctor path), so that their
native start-up logging is kept off the user's terminal in one place.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

from .errors import MissingDependencyError
from .native_logs import runtime_logs_silenced

EXTRA_MODULES = {
    "train": ("tensorflow", "keras", "matplotlib"),
    "convert": ("tensorflow", "keras", "tf2onnx", "onnx"),
}


def require_extra(command: str, extra: str = "train", modules: tuple[str, ...] | None = None) -> None:
    """Fail with one line naming the extra unless `modules` (default: the command's list) can be imported;
    then import them, with TensorFlow's start-up log lines kept off the user's terminal."""
    if modules is None:
        modules = EXTRA_MODULES.get(command, EXTRA_MODULES["train"])
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(
            f"'edgecxr {command}' needs {', '.join(missing)}, which the base (edge runtime) install leaves out; "
            f"install the extra: pip install 'edgecxr[{extra}]'"
        )
    # The one place the product quiets TensorFlow's own logging (bench's workers inherit it).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with runtime_logs_silenced():
        for module in modules:
            importlib.import_module(module)
