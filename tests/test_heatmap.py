"""Occlusion heat maps with the edge runtime alone, on real tiny models and real X-rays, and
`edgecxr predict --heatmap`."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_runner import run_cli
from edge_artifacts import edge_artifacts
from edgecxr.edge_runtime.heatmap import HeatMap, heatmap, overlay, overlay_png
from edgecxr.edge_runtime.heatmap_files import HeatMapFolder, safe_stem
from edgecxr.edge_runtime.predictor import Predictor
from edgecxr.edge_runtime.preprocessing import preprocess


@pytest.fixture(scope="module")
def models(tiny_run):
    return edge_artifacts(tiny_run)


@pytest.fixture(scope="module")
def films(four_films) -> list[Path]:
    return four_films


@pytest.mark.parametrize("artifact", ["int8.tflite", "fp32.tflite", "int8.onnx", "fp32.onnx"])
def test_map_shape_range_and_cost(models, films, artifact):
    predictor = Predictor.open(models[artifact])
    spec = predictor.spec
    result = heatmap(predictor, films[2])
    assert isinstance(result, HeatMap)
    assert result.heat.shape == result.change.shape == (spec.height, spec.width)
    assert result.heat.dtype == np.float32 and np.isfinite(result.heat).all()
    assert 0.0 <= result.heat.min() and result.heat.max() <= 1.0
    assert result.evaluations == 15 * 15 + 1 and result.elapsed_ms > 0
    assert result.probability == pytest.approx(predictor.predict(films[2]).probability, abs=1e-6)
    assert result.label == predictor.predict(films[2]).label
    with Image.open(films[2]) as film:
        assert result.film_size == film.size and result.box == (0, 0, *film.size)
    assert set(result.to_dict()) >= {"evaluations", "elapsed_ms", "probability", "label"}


def occluded_score(predictor, film: Path, result: HeatMap, row: int, column: int) -> float:
    """P(pneumonia) with the patch of the map's size centred on (row, column) greyed out, made
    here from the model input (not by the module under test)."""
    x = preprocess(film, predictor.spec)
    half = result.patch // 2
    top = int(np.clip(row - half, 0, x.shape[0] - result.patch))
    left = int(np.clip(column - half, 0, x.shape[1] - result.patch))
    x[top:top + result.patch, left:left + result.patch, :] = x.mean()
    return float(predictor.backend.predict_proba(x[None])[0])


def test_the_hot_region_is_where_covering_the_film_moves_the_answer(models, films):
    """A map that ignored the image (constant, random, or from another film) would point at a region
    whose occlusion changes the score no more than the coldest region's."""
    predictor = Predictor.open(models["fp32.tflite"])
    checked = 0
    for film in films:
        result = heatmap(predictor, film)
        if result.heat.max() == 0:
            continue
        sign = -1.0 if result.label == predictor.positive_label else 1.0
        evidence = sign * result.change  # > 0: covering it moves the answer towards the other label
        hot = np.unravel_index(np.argmax(evidence), evidence.shape)
        cold = np.unravel_index(np.argmin(evidence), evidence.shape)
        assert hot == np.unravel_index(np.argmax(result.heat), result.heat.shape)
        towards_other = sign * (occluded_score(predictor, film, result, *hot) - result.probability)
        cold_change = sign * (occluded_score(predictor, film, result, *cold) - result.probability)
        assert towards_other > 0, film.name
        assert towards_other > cold_change, film.name
        checked += 1
    assert checked >= 2
    maps = [heatmap(predictor, film).change for film in films]
    assert not np.allclose(maps[0], maps[2])  # different films, different maps


def test_overlay_colours_hot_regions_and_keeps_the_film_elsewhere(films):
    with Image.open(films[0]) as source:
        film = source.convert("L")
    heat = np.zeros((64, 64), dtype=np.float32)
    heat[:, 32:] = 1.0
    picture = overlay(film, heat)
    assert picture.mode == "RGB" and picture.size == film.size
    pixels = np.asarray(picture, dtype=int)
    gray = np.asarray(film, dtype=int)
    left = pixels[:, : film.size[0] // 3]
    assert np.array_equal(left[..., 0], gray[:, : film.size[0] // 3])  # untouched where the heat is 0
    assert np.array_equal(left[..., 0], left[..., 1])
    right = pixels[:, -film.size[0] // 3:]
    assert np.abs(right[..., 0] - right[..., 2]).mean() > 30  # coloured where hot
    decoded = Image.open(io.BytesIO(overlay_png(film, heat)))
    assert decoded.format == "PNG" and decoded.size == film.size


def test_overlay_refuses_a_map_made_for_another_film(models, films, data_root):
    predictor = Predictor.open(models["int8.tflite"])
    result = heatmap(predictor, films[0])
    other = Image.new("L", (result.film_size[0] + 10, result.film_size[1]), 128)
    from edgecxr.edge_runtime.errors import EdgecxrError

    with pytest.raises(EdgecxrError, match="made for a"):
        overlay(other, result)


def test_safe_names():
    assert safe_stem("../../etc/passwd") == "passwd"
    assert safe_stem("/x/IM 0001 (copy).dcm") == "IM_0001_copy"
    assert safe_stem("/x/.hidden") == "hidden"
    assert safe_stem("/x/...") == "image"


def test_names_are_unique_within_a_run(tmp_path):
    folder = HeatMapFolder(tmp_path / "maps")
    first = folder.write("/a/NORMAL/IM-1.jpeg", b"one")
    second = folder.write("/a/PNEUMONIA/IM-1.jpeg", b"two")
    third = folder.write("/a/other/im-1.dcm", b"three")
    assert [p.name for p in (first, second, third)] == ["IM-1.heatmap.png", "IM-1-2.heatmap.png", "im-1-3.heatmap.png"]
    assert first.read_bytes() == b"one" and sorted(p.name for p in (tmp_path / "maps").iterdir()) == sorted(
        p.name for p in (first, second, third))



def test_predict_writes_one_overlay_per_predicted_film(models, films, tmp_path, monkeypatch, capsys):
    inputs = tmp_path / "in"
    (inputs / "b").mkdir(parents=True)
    shutil.copy(films[0], inputs / "first film.jpeg")
    shutil.copy(films[2], inputs / "b" / "first film.jpeg")  # same name, other folder
    Image.new("RGB", (300, 300), (200, 30, 30)).save(inputs / "photo.png")  # refused: colour picture
    (inputs / "broken.png").write_bytes(b"not a png")  # skipped
    out = tmp_path / "maps"
    code, stdout, err = run_cli(monkeypatch, capsys, "predict", models["int8.tflite"], inputs, "--json",
                                "--heatmap", out)
    assert code == 1, err
    rows = [json.loads(line) for line in stdout.splitlines()]
    predicted = [r for r in rows if r["label"] in ("NORMAL", "PNEUMONIA")]
    assert len(predicted) == 2
    assert {r["label"] for r in rows if r["path"].endswith("photo.png")} == {"not_cxr"}
    written = sorted(p.name for p in out.iterdir())
    assert written == ["first_film-2.heatmap.png", "first_film.heatmap.png"]  # nothing half-written either
    for name in written:
        with Image.open(out / name) as png:
            assert png.format == "PNG" and png.size == Image.open(films[0]).size
    assert "2 heat maps written" in err


def test_predict_heatmap_into_a_file_is_one_line(models, films, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "maps"
    blocker.write_text("a file")
    code, _, err = run_cli(monkeypatch, capsys, "predict", models["int8.tflite"], films[0], "--heatmap", blocker)
    assert code == 2 and "not a folder" in err and "Traceback" not in err


def test_the_sanity_benchmarks_rank_correlation_handles_ties_like_scipy():
    from edgecxr.benchmarks.measure.heatmap_sanity import shifted, spearman

    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=200).astype(float)  # int8 maps tie a lot
    b = a + rng.integers(0, 3, size=200)
    assert spearman(a, a) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)
    stats = pytest.importorskip("scipy.stats")
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))
    film = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert shifted(film, 1).tolist() == [[0, 0, 1, 2], [4, 4, 5, 6], [8, 8, 9, 10]]
