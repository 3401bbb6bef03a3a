"""Bad input never crashes a run or loses results: each file is predicted after normalising, or skipped with its reason."""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from edge_artifacts import edge_artifacts
from edgecxr.cli import main
from edgecxr.edge_runtime.images import open_image
from edgecxr.edge_runtime.predictor import Predictor
from edgecxr.edge_runtime.preprocessing import to_pixels


@pytest.fixture(scope="module")
def predictor(tiny_run) -> Predictor:
    return Predictor.open(edge_artifacts(tiny_run)["fp32.tflite"])


@pytest.fixture(scope="module")
def reference(tiny_kaggle, tmp_path_factory) -> Path:
    """A real X-ray stretched to the full 0..255 range and stored losslessly, so variants can match it exactly."""
    source = sorted((tiny_kaggle / "test" / "PNEUMONIA").iterdir())[0]
    gray = ImageOps.autocontrast(Image.open(source).convert("L"))
    assert np.asarray(gray).min() == 0 and np.asarray(gray).max() == 255
    path = tmp_path_factory.mktemp("reference") / "reference.png"
    gray.save(path)
    return path


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims to be width x height with almost no data: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def make_bad_files(folder: Path, good_jpeg: Path) -> dict[str, str]:
    """{file name: expected words in its skip reason}."""
    folder.mkdir(parents=True, exist_ok=True)
    data = good_jpeg.read_bytes()
    (folder / "random.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (folder / "truncated.jpeg").write_bytes(data[: len(data) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("patient notes, not an image\n")
    (folder / "bomb.png").write_bytes(png_header_only(40_000, 40_000))
    Image.new("1", (5000, 5000)).save(folder / "huge.png")  # 25 MP: decodable, but over the 20 MP limit
    return {"random.jpg": "not an image", "truncated.jpeg": "truncated", "empty.png": "empty",
            "notes.png": "not an image", "bomb.png": "too large", "huge.png": "too large"}


@pytest.mark.parametrize("name", ["random.jpg", "truncated.jpeg", "empty.png", "notes.png", "bomb.png", "huge.png"])
def test_bad_file_is_skipped_with_its_reason(predictor, tiny_kaggle, tmp_path, name):
    good = sorted((tiny_kaggle / "test" / "NORMAL").iterdir())[:2]
    expected = make_bad_files(tmp_path, good[0])
    results = list(predictor.predict_many([good[0], tmp_path / name, good[1]], batch_size=3))
    assert [r.ok for r in results] == [True, False, True]
    assert expected[name] in results[1].error
    assert results[1].label is None and results[1].probability is None
    assert results[0].probability == pytest.approx(predictor.predict(good[0]).probability, abs=1e-6)


def test_unreadable_file_is_skipped(predictor, tiny_kaggle, tmp_path):
    good = sorted((tiny_kaggle / "test" / "NORMAL").iterdir())[0]
    folder_named_like_an_image = tmp_path / "scan.jpg"
    folder_named_like_an_image.mkdir()
    dangling = tmp_path / "gone.jpg"
    dangling.symlink_to(tmp_path / "deleted.jpg")
    sources = [folder_named_like_an_image, dangling, good]
    if os.geteuid() != 0:  # root reads files whatever their mode
        locked = tmp_path / "locked.jpg"
        locked.write_bytes(good.read_bytes())
        locked.chmod(0)
        sources.insert(0, locked)
    results = list(predictor.predict_many(sources))
    assert all("cannot read" in r.error for r in results[:-1])
    assert results[-1].ok


def predict_variant(predictor, reference: Path, variant: Path):
    expected = predictor.predict(reference)
    got = predictor.predict(variant)
    np.testing.assert_array_equal(to_pixels(open_image(variant), predictor.spec),
                                  to_pixels(open_image(reference), predictor.spec))
    assert got.probability == pytest.approx(expected.probability, abs=1e-6)
    assert got.label == expected.label


def test_16bit_png_is_normalised(predictor, reference, tmp_path):
    pixels = np.asarray(Image.open(reference), dtype=np.uint16) * 257
    path = tmp_path / "sixteen.png"
    Image.fromarray(pixels).save(path)
    assert Image.open(path).mode.startswith("I")
    predict_variant(predictor, reference, path)


def test_rgba_png_is_normalised(predictor, reference, tmp_path):
    rgba = Image.open(reference).convert("RGBA")
    path = tmp_path / "rgba.png"
    rgba.save(path)
    assert Image.open(path).mode == "RGBA"
    predict_variant(predictor, reference, path)


def test_cmyk_tiff_is_normalised(predictor, reference, tmp_path):
    path = tmp_path / "cmyk.tiff"
    Image.open(reference).convert("RGB").convert("CMYK").save(path)
    assert Image.open(path).mode == "CMYK"
    predict_variant(predictor, reference, path)


def test_exif_rotated_image_is_turned_upright(predictor, reference, tmp_path):
    upright = Image.open(reference)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera writes for orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.png"
    stored.save(path, exif=exif.tobytes())
    without_tag = tmp_path / "rotated_no_exif.png"
    stored.save(without_tag)
    # The check can fail: ignoring the tag would give different model input.
    assert not np.array_equal(to_pixels(open_image(without_tag), predictor.spec),
                              to_pixels(open_image(reference), predictor.spec))
    predict_variant(predictor, reference, path)


def test_other_sources_give_the_same_prediction(predictor, reference):
    expected = predictor.predict(reference).probability
    image = Image.open(reference)
    for source in (reference.read_bytes(), image, np.asarray(image), str(reference)):
        assert predictor.predict(source).probability == pytest.approx(expected, abs=1e-6)
    assert predictor.predict(np.asarray(image)).path == "<array>"


def test_cli_folder_with_bad_files_predicts_the_rest_and_exits_1(tiny_run, tiny_kaggle, reference, tmp_path,
                                                                 monkeypatch, capsys):
    folder = tmp_path / "inbox"
    good = sorted((tiny_kaggle / "test" / "NORMAL").iterdir())[:3]
    expected = make_bad_files(folder, good[0])
    for path in good:
        (folder / path.name).write_bytes(path.read_bytes())
    pixels = np.asarray(Image.open(reference), dtype=np.uint16) * 257
    Image.fromarray(pixels).save(folder / "sixteen.png")
    Image.open(reference).convert("RGB").convert("CMYK").save(folder / "cmyk.tif")
    model = edge_artifacts(tiny_run)["int8.tflite"]
    monkeypatch.setattr(sys, "argv", ["edgecxr", "predict", str(model), str(folder), "--json", "--batch-size", "4"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    assert exit_info.value.code == 1
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}
    assert len(rows) == len(expected) + 5
    for name, words in expected.items():
        assert rows[name]["label"] is None and words in rows[name]["error"], rows[name]
        assert name in err  # the summary lists what was skipped
    for name in [p.name for p in good] + ["sixteen.png", "cmyk.tif"]:
        assert rows[name]["error"] is None and rows[name]["label"] in ("NORMAL", "PNEUMONIA")
    assert f"{len(expected)} skipped" in err
