"""Full-size chest films for decode benchmarks and checks, made from what is installed.

Clinic films are 1,500-3,000 pixel JPEGs; the data folder holds 224-pixel copies. Two sources:
- the data folder's films upsampled (Lanczos) to about 2,000 pixels and re-encoded as JPEG at a
  viewer's export quality: smooth (no detail above the 224-pixel copy's), so they decode a little
  faster than a real film of the same size, but they keep the labels;
- real full-resolution radiographs shipped by the `pydicom-data` package (NEMA WG04 test images,
  read with pydicom): RG1, a 1841x1955 15-bit CR chest film, exported as an 8-bit JPEG the way a
  DICOM viewer does (window = full range, MONOCHROME1 inverted), and RG3, a 1760x1760 CR of a
  tibia (a radiograph, not a chest film). Optional: `pip install pydicom pydicom-data`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 2000
QUALITY = 90  # a typical DICOM viewer's "export as JPEG" quality
# NEMA WG04 radiographs in pydicom-data: name -> what it shows.
REAL_FILMS = {"RG1_UNCR": "CR chest PA, 1841x1955, 15-bit", "RG3_UNCR": "CR tibia, 1760x1760, 10-bit"}


def upsample_film(source: Path, target: Path, side: int = SIDE, quality: int = QUALITY) -> None:
    """`source` upsampled so its longer side is `side`, saved as a baseline JPEG at `target`."""
    with Image.open(source) as image:
        gray = image.convert("L")
        width, height = gray.size
        factor = side / max(width, height)
        big = gray.resize((round(width * factor), round(height * factor)), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    big.save(target, format="JPEG", quality=quality)


def upsampled_films(sources: list[Path], root: Path, out: Path, side: int = SIDE,
                    quality: int = QUALITY) -> list[Path]:
    """Each source (under `root`) upsampled into the same relative place under `out`; existing kept."""
    made = []
    for source in sources:
        target = (out / source.relative_to(root)).with_suffix(".jpeg")
        if not target.exists():
            upsample_film(source, target, side, quality)
        made.append(target)
    return made


def real_films(out: Path, quality: int = QUALITY) -> tuple[list[Path], str | None]:
    """The pydicom-data radiographs as 8-bit JPEGs in `out`, or ([], why not)."""
    try:
        import data_store  # the pydicom-data package
        import pydicom
    except ImportError:
        return [], "pydicom and pydicom-data are not installed (pip install pydicom pydicom-data)"
    folder = Path(data_store.__file__).parent / "data"
    made = []
    for name in REAL_FILMS:
        target = out / f"{name}.jpeg"
        if not target.exists():
            dataset = pydicom.dcmread(folder / f"{name}.dcm")
            values = dataset.pixel_array.astype(np.float64)
            low, high = values.min(), values.max()
            scaled = (values - low) * (255.0 / (high - low))
            if dataset.PhotometricInterpretation == "MONOCHROME1":  # its lowest value is shown white
                scaled = 255.0 - scaled
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray((scaled + 0.5).astype(np.uint8)).save(target, format="JPEG", quality=quality)
        made.append(target)
    return made, None
