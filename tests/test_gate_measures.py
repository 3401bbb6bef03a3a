"""The cheap checks' measures, computed the fast way (Pillow's C code, exact moments), equal their
plain definitions on real films and on pictures that are not films."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecxr.edge_runtime.gate import measure


def plain_measures(image: Image.Image) -> dict:
    """The definitions, written directly in float64 numpy (the images here are at most 256 a side)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    gray = np.asarray(image.convert("L"), dtype=np.float64)

    def correlation(a, b):
        a, b = a.reshape(-1) - a.mean(), b.reshape(-1) - b.mean()
        scale = np.sqrt(np.sum(a * a) * np.sum(b * b))
        return float(np.sum(a * b) / scale) if scale > 0 else 1.0

    pairs = [(gray[:, :-1], gray[:, 1:])] * (gray.shape[1] > 1) + [(gray[:-1], gray[1:])] * (gray.shape[0] > 1)
    tones = np.bincount((gray.astype(np.uint8) // 4).reshape(-1), minlength=64)
    return {"chroma": float(np.mean(rgb.max(axis=2) - rgb.min(axis=2))) if image.mode != "L" else 0.0,
            "spread": float(gray.std()), "flat_share": float(tones.max() / gray.size),
            "neighbour_correlation": min(correlation(a, b) for a, b in pairs) if pairs else 1.0}


def pictures(data_root: Path) -> list[Image.Image]:
    rng = np.random.default_rng(7)
    films = [Image.open(p) for label in ("NORMAL", "PNEUMONIA") for p in sorted((data_root / "test" / label).iterdir())[:5]]
    return films + [
        Image.fromarray(rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)),  # colour noise
        Image.fromarray(rng.integers(0, 256, (1, 200), dtype=np.uint8)),  # one row
        Image.fromarray(rng.integers(0, 256, (200, 1), dtype=np.uint8)),  # one column
        Image.new("L", (100, 100), 9),  # flat
        films[0].convert("RGB").point(lambda v: min(255, v + 40)).convert("RGB"),
        Image.merge("RGB", [films[1].convert("L"), films[1].convert("L").point(lambda v: v // 2),
                            films[1].convert("L")]),  # a tinted film
    ]


def test_the_fast_measures_are_the_plain_definitions(data_root):
    for picture in pictures(data_root):
        fast = measure(picture)
        for name, value in plain_measures(picture).items():
            # float64 sums of the same integers in another order: equal to rounding (1e-9 is far
            # below every limit's margin).
            assert getattr(fast, name) == pytest.approx(value, abs=1e-9), (picture.size, picture.mode, name)


def test_a_passed_grayscale_is_used_only_where_no_downsampling_happens(data_root):
    film = Image.open(sorted((data_root / "test" / "NORMAL").iterdir())[0])
    assert measure(film, film.convert("L")) == measure(film)
    big = film.resize((900, 900))
    assert measure(big, big.convert("L").point(lambda v: 255 - v)) == measure(big)  # ignored: analysed at 256
