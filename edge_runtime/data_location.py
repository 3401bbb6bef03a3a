"""Where the chest X-ray data lives when the user does not say."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import EdgecxrError

KAGGLE_HINT = (
    "expected the Kaggle 'Chest X-Ray Images (Pneumonia)' layout: DIR/train/{NORMAL,PNEUMONIA}/ "
    "(optional DIR/val/ and DIR/test/ alike); download it from "
    "https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia and pass --data DIR "
    "or set EDGECXR_DATA"
)


def candidate_data_dirs() -> list[Path]:
    """In order: $EDGECXR_DATA, ../shared/data/chest_xray, data/chest_xray."""
    candidates = []
    if os.environ.get("EDGECXR_DATA"):
        candidates.append(Path(os.environ["EDGECXR_DATA"]))
    candidates += [Path("../shared/data/chest_xray"), Path("data/chest_xray")]
    return candidates


def resolve_data_dir(given: Path | None) -> Path:
    """The folder the user named, else the first default that exists; a clear error otherwise."""
    if given is not None:
        if not Path(given).is_dir():
            raise EdgecxrError(f"data folder not found: {given}; {KAGGLE_HINT}")
        return Path(given)
    for candidate in candidate_data_dirs():
        if candidate.is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidate_data_dirs())
    raise EdgecxrError(f"no data folder found (tried {tried}); {KAGGLE_HINT}")
