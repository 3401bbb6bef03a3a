"""The family hold-out benchmark's data: one NORMAL family gone, everything else linked, test/ untouched."""

from research.family_holdout import data_without, family_of
from edgecxr.train.dataset import find_splits


def test_data_without_a_family_links_every_other_training_image(data_root, tmp_path):
    root = data_without(data_root / "train", "NORMAL2", tmp_path / "without-NORMAL2")

    normal = sorted(p.name for p in (root / "train" / "NORMAL").iterdir())
    pneumonia = list((root / "train" / "PNEUMONIA").iterdir())
    expected_normal = sorted(p.name for p in (data_root / "train" / "NORMAL").iterdir()
                             if not p.name.startswith("NORMAL2-"))
    assert normal == expected_normal and all(name.startswith("IM-") for name in normal)
    assert len(pneumonia) == len(list((data_root / "train" / "PNEUMONIA").iterdir()))
    assert all(p.resolve().parent == (data_root / "train" / "PNEUMONIA").resolve() for p in pneumonia)
    assert not (root / "test").exists()  # the benchmark never reads test/
    assert find_splits(root).test is None


def test_families_are_told_apart_by_prefix(data_root):
    names = {p.name: family_of(p) for p in (data_root / "train" / "NORMAL").iterdir()}
    assert set(names.values()) == {"IM", "NORMAL2"}  # every NORMAL image belongs to one of the two
    assert family_of(data_root / "train" / "PNEUMONIA" / "person1_bacteria_1.jpeg") is None
