"""Write files so that a crash or an error never leaves a half-written artifact behind."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
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


# A list of plain numbers as json.dumps(indent=2) lays it out: one number a line.
_NUMBER_LIST = re.compile(r"\[\s*(-?[0-9][0-9.eE+-]*(?:,\s*-?[0-9][0-9.eE+-]*)*)\s*\]")


def write_json_atomic(target: str | os.PathLike, obj, number_lists_on_one_line: bool = False) -> None:
    """Strict, indented JSON. `number_lists_on_one_line` keeps a file of long number arrays (a model's
    feature reference) readable and a fraction of the size: each innermost list on one line."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False)
    if number_lists_on_one_line:
        compact = _NUMBER_LIST.sub(lambda match: "[" + re.sub(r"\s+", "", match.group(1)) + "]", text)
        # The pattern cannot tell a list from a string that shows one ("sizes [20, 50]"): a sealed
        # document must read back exactly as written, so the compact text is kept only if it does.
        text = compact if json.loads(compact) == json.loads(text) else text
    write_text_atomic(target, text + "\n")
