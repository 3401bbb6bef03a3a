"""Text from outside (file names, references) made safe to write: to a UTF-8 file, and to a spreadsheet."""

from __future__ import annotations

import os

# Text a spreadsheet would run as a formula if a cell starts with it (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def printable(text: str | os.PathLike) -> str:
    """A path or name as text any UTF-8 writer takes: bytes that are not UTF-8 (Python keeps them as lone
    surrogates) are written as backslash escapes, so `\\xff` in a name reads \\udcff instead of failing."""
    text = os.fspath(text)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def safe_cell(value):
    """One CSV cell: None empty, formula-like text quoted with a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
