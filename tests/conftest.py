"""Shared fixtures: the real data folder, a tiny Kaggle-layout copy of it, and a tiny trained run."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGECXR_DATA", REPO.parent / "shared" / "data" / "chest_xray"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real Kaggle chest X-ray folder; the suite is meant to run against real images."""
    assert (DATA / "train" / "NORMAL").is_dir(), f"real data not found at {DATA} (set EDGECXR_DATA)"
    return DATA


def copy_images(source: Path, target: Path, count: int) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir())[:count]:
        shutil.copy(path, target / path.name)


@pytest.fixture(scope="session")
def tiny_kaggle(data_root, tmp_path_factory) -> Path:
    """A Kaggle-layout folder with a few dozen real images per class and split."""
    root = tmp_path_factory.mktemp("tiny_kaggle")
    for split, count in (("train", 40), ("test", 12)):
        for label in ("NORMAL", "PNEUMONIA"):
            # Different patients per class in train: the patient split needs several of each.
            copy_images(data_root / split / label, root / split / label, count)
    return root


@pytest.fixture(scope="session")
def xray_pool(data_root, tmp_path_factory) -> Path:
    """Real X-rays the tiny run never saw, for calibrating and testing the input gate and monitor:
    fit/ (about 200), calibration/ (about 220) and held_out/ (about 80), half NORMAL, half
    PNEUMONIA. Split by patient, shuffled: file names sort by source, and films of one patient look
    alike, so a split by name or by image would make the parts differ or overlap."""
    from edgecxr.train.dataset import patient_id

    root = tmp_path_factory.mktemp("xray_pool")
    rng = random.Random(0)
    for label in ("NORMAL", "PNEUMONIA"):
        unseen = sorted((data_root / "train" / label).iterdir())[40:290]  # tiny_kaggle takes the first 40
        patients: dict[str, list[Path]] = {}
        for path in unseen:
            patients.setdefault(patient_id(path), []).append(path)
        groups = list(patients.values())
        rng.shuffle(groups)
        taken = 0
        for group in groups:
            part = "fit" if taken < 100 else "calibration" if taken < 210 else "held_out"
            (root / part).mkdir(exist_ok=True)
            for path in group:
                shutil.copy(path, root / part / path.name)
            taken += len(group)
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_kaggle, tmp_path_factory) -> Path:
    """A compact model trained for one epoch on the tiny folder: a real run folder, fast."""
    from edgecxr.train.hparams import TrainConfig
    from edgecxr.train.trainer import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    config = TrainConfig(data=tiny_kaggle, out=out, epochs=1, batch_size=16, val_fraction=0.25, seed=1)
    return train(config)


@pytest.fixture(scope="session")
def four_films(data_root) -> list[Path]:
    """Two NORMAL then two PNEUMONIA real test/ films: the heat-map tests' subjects."""
    return [sorted((data_root / "test" / label).iterdir())[i] for label in ("NORMAL", "PNEUMONIA") for i in (0, 1)]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Pixel caches go to a per-session temp folder, never the user's ~/.cache."""
    monkeypatch.setenv("EDGECXR_CACHE", str(tmp_path_factory.getbasetemp() / "pixel-cache"))
