"""Write files so that a crash or an error never leaves a half-written artifact behind."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; it replaces `target` only if the block succeeds.

    The temporary file lives in the same folder so the final rename is atomic on POSIX, and an
    earlier good file at `target` survives any failure inside the block.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the real suffix: Keras and the converters check it.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".partial{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; models and reports are meant to be copied and shared.
        if tmp.exists():
            os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_safe(value):
    """NaN and infinity become null, so every JSON file written is strict JSON (a ROC AUC is NaN
    when a folder holds one class)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _is_number_list(value) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def _dumps_number_lists_inline(value, level: int = 0) -> str:
    """json.dumps(indent=2)'s layout, except that a list of plain numbers stays on one line."""
    pad, inner = "  " * level, "  " * (level + 1)
    if _is_number_list(value):
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    if isinstance(value, dict) and value:
        items = (f"{inner}{json.dumps(str(k))}: {_dumps_number_lists_inline(v, level + 1)}" for k, v in value.items())
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and value:
        items = (inner + _dumps_number_lists_inline(v, level + 1) for v in value)
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value, allow_nan=False)


def write_json_atomic(target: str | os.PathLike, obj, number_lists_on_one_line: bool = False) -> None:
    """Strict, indented JSON. `number_lists_on_one_line` keeps a file of long number arrays (a model's
    feature reference) readable and a fraction of the size: each innermost list on one line."""
    safe = json_safe(obj)
    text = (_dumps_number_lists_inline(safe) if number_lists_on_one_line
            else json.dumps(safe, indent=2, sort_keys=False, allow_nan=False))
    write_text_atomic(target, text + "\n")
