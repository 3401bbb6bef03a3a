"""The data pipeline on the real folder: layout, patient split, bad files, cache."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.folders import labelled_images
from edgecxr.edge_runtime.preprocessing import PreprocessSpec
from edgecxr.train.dataset import evaluation_folder, find_splits, patient_id, split_by_patient
from edgecxr.train.pixel_cache import load_pixels


def test_loader_reads_the_real_kaggle_folder(data_root):
    splits = find_splits(data_root)
    train = labelled_images(splits.train)
    test = labelled_images(splits.test)
    counts = np.bincount([s.label for s in train], minlength=2)
    assert len(train) == 4733 and counts.tolist() == [1212, 3521]
    assert len(test) == 624
    assert evaluation_folder(data_root) == data_root / "test"


@pytest.mark.parametrize("name, patient", [
    ("person1000_bacteria_2931.jpeg", "person1000"),
    ("person1000_virus_1681.jpeg", "person1000"),
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"),
    ("scan.png", "scan"),
])
def test_patient_id(name, patient):
    assert patient_id(Path(name)) == patient


def test_patient_split_on_real_data_keeps_every_patient_on_one_side(data_root):
    samples = labelled_images(data_root / "train")
    paths, labels = [s.path for s in samples], [s.label for s in samples]
    train_idx, val_idx = split_by_patient(paths, labels, 0.15, seed=7)
    assert sorted(train_idx + val_idx) == list(range(len(samples)))
    train_patients = {patient_id(paths[i]) for i in train_idx}
    val_patients = {patient_id(paths[i]) for i in val_idx}
    assert not train_patients & val_patients
    # Stratified: each class is about 15 % validation.
    for label in (0, 1):
        share = sum(labels[i] == label for i in val_idx) / labels.count(label)
        assert 0.13 < share < 0.20
    # Seeded: same seed, same split; another seed, another split.
    assert split_by_patient(paths, labels, 0.15, seed=7) == (train_idx, val_idx)
    assert split_by_patient(paths, labels, 0.15, seed=8)[1] != val_idx


def make_bad_folder(root: Path, data_root: Path) -> dict[str, str]:
    """A class folder with real images plus every kind of bad or unusual file."""
    normal, pneumonia = root / "NORMAL", root / "PNEUMONIA"
    normal.mkdir(parents=True)
    pneumonia.mkdir(parents=True)
    for path in sorted((data_root / "test" / "NORMAL").iterdir())[:3]:
        shutil.copy(path, normal / path.name)
    for path in sorted((data_root / "test" / "PNEUMONIA").iterdir())[:3]:
        shutil.copy(path, pneumonia / path.name)
    good = sorted((data_root / "test" / "NORMAL").iterdir())[0].read_bytes()
    (normal / "truncated.jpeg").write_bytes(good[: len(good) // 3])
    (normal / "empty.jpeg").write_bytes(b"")
    (normal / "notes.jpeg").write_text("this is a text file, not an X-ray")
    Image.new("RGBA", (300, 260), (120, 120, 120, 200)).save(pneumonia / "rgba.png")
    gradient = (np.arange(200 * 180, dtype=np.uint32).reshape(200, 180) * 3 % 4096).astype(np.uint16)
    Image.fromarray(gradient).save(pneumonia / "sixteen_bit.png")
    Image.new("L", (6000, 6000)).save(pneumonia / "huge.png")
    return {"truncated.jpeg": "corrupt", "empty.jpeg": "empty", "notes.jpeg": "not an image", "huge.png": "too large"}


def test_bad_files_are_skipped_with_reasons_and_the_rest_loaded(data_root, tmp_path, capsys):
    expected_skips = make_bad_folder(tmp_path / "bad", data_root)
    result = load_pixels(labelled_images(tmp_path / "bad"), PreprocessSpec(), use_cache=False)
    skipped = {Path(path).name: reason for path, reason in result.skipped}
    assert set(skipped) == set(expected_skips)
    for name, words in expected_skips.items():
        assert words in skipped[name]
    # 6 real images + the RGBA and 16-bit PNGs, which are normalised, not skipped.
    assert result.pixels.shape == (8, 64, 64, 1)
    names = [Path(p).name for p in result.paths]
    assert "rgba.png" in names and "sixteen_bit.png" in names
    assert result.pixels[names.index("sixteen_bit.png")].max() > 200  # stretched, not black
    warnings = capsys.readouterr().err
    assert warnings.count("skipping") == 4


def test_missing_or_empty_class_folder_is_a_clear_error(tmp_path):
    (tmp_path / "NORMAL").mkdir()
    with pytest.raises(EdgecxrError, match="no PNEUMONIA subfolder"):
        labelled_images(tmp_path)
    (tmp_path / "PNEUMONIA").mkdir()
    with pytest.raises(EdgecxrError, match="contains no images"):
        labelled_images(tmp_path)


def test_pixel_cache_is_reused_and_invalidated_when_files_change(tiny_kaggle, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECXR_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "copy"
    shutil.copytree(tiny_kaggle / "test", folder)
    spec = PreprocessSpec()
    first = load_pixels(labelled_images(folder), spec)
    assert len(list((tmp_path / "cache").glob("pixels-*.npz"))) == 1
    second = load_pixels(labelled_images(folder), spec)
    np.testing.assert_array_equal(first.pixels, second.pixels)
    assert len(list((tmp_path / "cache").glob("pixels-*.npz"))) == 1
    # Replacing one file's content must not serve stale pixels.
    victim = sorted((folder / "NORMAL").iterdir())[0]
    buffer = io.BytesIO()
    Image.new("L", (224, 224), 255).save(buffer, "JPEG")
    victim.write_bytes(buffer.getvalue())
    third = load_pixels(labelled_images(folder), spec)
    assert len(list((tmp_path / "cache").glob("pixels-*.npz"))) == 2
    assert not np.array_equal(first.pixels, third.pixels)
