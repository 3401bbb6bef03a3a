"""Full-size films: reduced-size JPEG decoding (`predict --reduced-decode`) stays within int8
rounding of the full decode on a few real films, and parallel decoding gives the serial answers
in the same order."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edge_artifacts import edge_artifacts
from edgecxr.benchmarks.measure.full_size_films import upsample_film
from edgecxr.edge_runtime.images import open_image
from edgecxr.edge_runtime.gate import check_image
from edgecxr.edge_runtime.predictor import Predictor

# The int8 output of the compact model moves in steps of 1/256; reduced decoding may move a
# resized pixel by a level or two, which histogram equalisation can spread, so a few steps.
INT8_STEPS = 6 / 256


@pytest.fixture(scope="module")
def full_size_films(tiny_kaggle, tmp_path_factory):
    """Real test films upsampled to 2,000 pixels and saved as JPEG, as a clinic's films are."""
    out = tmp_path_factory.mktemp("full_size")
    films = []
    for label in ("NORMAL", "PNEUMONIA"):
        for source in sorted((tiny_kaggle / "test" / label).iterdir())[:4]:
            target = out / label / f"{source.stem}.jpeg"
            upsample_film(source, target)
            films.append(target)
    return films


def test_reduced_decode_agrees_with_full_decode(tiny_run, full_size_films):
    model = edge_artifacts(tiny_run)["int8.tflite"]
    full = Predictor.open(model)
    reduced = Predictor.open(model, reduced_decode=True)
    assert full.reduce_to is None and reduced.reduce_to >= 2 * max(reduced.spec.height, reduced.spec.width)
    # The films really are decoded smaller (else this test would compare the full decode with itself).
    sizes = {open_image(film, reduce_to=reduced.reduce_to).size for film in full_size_films}
    assert all(max(size) <= 1000 and min(size) >= reduced.reduce_to for size in sizes), sizes

    a = list(full.predict_many(full_size_films, batch_size=4))
    b = list(reduced.predict_many(full_size_films, batch_size=4))
    assert all(x.ok and not x.refused for x in a)
    assert [x.label for x in a] == [y.label for y in b]
    dp = np.abs(np.array([x.probability for x in a]) - np.array([y.probability for y in b]))
    assert dp.max() <= INT8_STEPS, dp


def test_reduced_decode_keeps_a_colour_photo_colour(tmp_path):
    """The draft keeps the file's mode: decoding straight to gray would hide a colour photo's chroma
    from the input gate."""
    skimage_data = pytest.importorskip("skimage.data")
    photo = Image.fromarray(skimage_data.astronaut()).resize((2000, 2000), Image.Resampling.LANCZOS)
    path = tmp_path / "astronaut.jpeg"
    photo.save(path, quality=90)
    image = open_image(path, reduce_to=256)
    assert image.size == (500, 500) and image.mode == "RGB"  # 1/4 scale: 1/8 would be under 256
    assert "colour picture" in check_image(image)


def test_parallel_predict_gives_the_serial_results_in_order(tiny_run, tiny_kaggle, full_size_films, tmp_path):
    model = edge_artifacts(tiny_run)["int8.tflite"]
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(full_size_films[0].read_bytes()[:2000])
    blank = tmp_path / "blank.png"
    Image.new("L", (512, 512), 128).save(blank)
    small = sorted((tiny_kaggle / "test" / "NORMAL").iterdir())
    sources = [*full_size_films[:3], broken, *small[:5], blank, *full_size_films[3:], *small[5:9]]
    predictor = Predictor.open(model, reduced_decode=True)  # the fast path, where threads matter most
    serial = list(predictor.predict_many(sources, batch_size=3))
    parallel = list(predictor.predict_many(sources, batch_size=3, workers=3))

    def answer(p):
        return p.path, p.label, p.probability, p.reason, p.error, p.gate_distance

    assert [answer(p) for p in parallel] == [answer(p) for p in serial]
    assert [p.path for p in parallel] == [str(s) for s in sources]
    assert not serial[3].ok and serial[9].refused  # the broken file and the blank frame kept their places

