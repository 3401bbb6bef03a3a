"""Where `edgecxr predict --heatmap DIR` puts its overlays: one PNG per predicted image.

Names come from the input's file name, reduced to letters, digits, '.', '-' and '_' so no input
can write outside DIR or hide a file; a name already used in this run (two folders with an
IM-0001.dcm each) gets -2, -3, ... in input order, which is sorted, so reruns give the same names.
"""

from __future__ import annotations

import re
from pathlib import Path

from .atomic import atomic_path
from .errors import EdgecxrError

UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_STEM = 120


def safe_stem(path: str | Path) -> str:
    """A file name stem that is safe in any folder: 'IM 0001.dcm' -> 'IM_0001'."""
    stem = UNSAFE.sub("_", Path(str(path)).stem).strip("._") or "image"
    return stem[:MAX_STEM]


class HeatMapFolder:
    """Unique, safe names in one folder and atomic writes (a crash leaves no half-written PNG)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise EdgecxrError(f"--heatmap {self.folder}: exists and is not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EdgecxrError(f"cannot create {self.folder}: {exc.strerror or exc}") from None
        self.used: set[str] = set()
        self.written: list[Path] = []

    def name_for(self, source: str | Path) -> Path:
        stem = safe_stem(source)
        name, number = f"{stem}.heatmap.png", 1
        while name.lower() in self.used:  # lower(): case-insensitive file systems (macOS, FAT sticks)
            number += 1
            name = f"{stem}-{number}.heatmap.png"
        self.used.add(name.lower())
        return self.folder / name

    def write(self, source: str | Path, png: bytes) -> Path:
        target = self.name_for(source)
        try:
            with atomic_path(target) as tmp:
                tmp.write_bytes(png)
        except OSError as exc:
            raise EdgecxrError(f"cannot write {target}: {exc.strerror or exc}") from None
        self.written.append(target)
        return target
