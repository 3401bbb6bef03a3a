"""`edgecxr predict` and `edgecxr doctor` end to end, in-process, on real tiny models and real X-rays."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli_runner import run_cli
from edge_artifacts import edge_artifacts, gated_artifacts, legacy_artifacts, write_resealed
from edgecxr.edge_runtime.metadata import metadata_path
from edgecxr.edge_runtime.predictor import Predictor


@pytest.fixture(scope="module")
def models(tiny_run):
    return edge_artifacts(tiny_run)



def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("artifact", ["int8.tflite", "fp32.tflite", "int8.onnx", "fp32.onnx"])
def test_json_lines_over_a_labelled_folder(models, tiny_kaggle, monkeypatch, capsys, artifact):
    folder = tiny_kaggle / "test"
    code, out, err = run_cli(monkeypatch, capsys, "predict", models[artifact], folder, "--json")
    assert code == 0, err
    rows = json_lines(out)
    assert len(rows) == 24
    predictor = Predictor.open(models[artifact])
    for row in rows:
        assert set(row) >= {"path", "label", "probability", "threshold", "latency_ms", "error", "truth"}
        assert row["error"] is None and row["latency_ms"] > 0
        assert row["truth"] == Path(row["path"]).parent.name
        assert row["threshold"] == pytest.approx(predictor.threshold)
        assert row["label"] == ("PNEUMONIA" if row["probability"] >= row["threshold"] else "NORMAL")
    first = predictor.predict(rows[0]["path"])
    assert rows[0]["probability"] == pytest.approx(first.probability, abs=1e-6)
    correct = sum(row["label"] == row["truth"] for row in rows)
    assert f"accuracy {correct / 24:.4f}" in err
    assert "sensitivity" in err and "specificity" in err


def test_a_folder_runs_in_batches_of_8_and_a_heat_map_one_film_at_a_time(models, tiny_kaggle, tmp_path,
                                                                         monkeypatch, capsys):
    """Batches cut predict's per-call work; with --heatmap each film's pixels wait for its map, so
    the default stays 1 there. The answers are the same either way."""
    from edgecxr.edge_runtime.backends import open_backend

    backend_class = type(open_backend(models["int8.tflite"]))
    sizes = []
    real_infer = backend_class.infer

    def counting_infer(self, inputs, *args, **kwargs):
        sizes.append(len(inputs))
        return real_infer(self, inputs, *args, **kwargs)

    monkeypatch.setattr(backend_class, "infer", counting_infer)
    folder = tiny_kaggle / "test"
    code, batched, err = run_cli(monkeypatch, capsys, "predict", models["int8.tflite"], folder, "--json")
    assert code == 0, err
    assert sizes == [8, 8, 8]  # 24 films
    sizes.clear()
    code, single, err = run_cli(monkeypatch, capsys, "predict", models["int8.tflite"], folder, "--json",
                                "--batch-size", "1")
    assert code == 0 and sizes == [1] * 24, err
    batched_rows, single_rows = json_lines(batched), json_lines(single)
    assert [(r["path"], r["label"]) for r in batched_rows] == [(r["path"], r["label"]) for r in single_rows]
    # Equal on the host that measured it; the bound is one int8 output step (1/256), room for another
    # CPU's XNNPACK kernel for a batch of 8 rounding one requantization differently.
    assert max(abs(a["probability"] - b["probability"]) for a, b in zip(batched_rows, single_rows)) <= 1 / 256
    sizes.clear()
    code, _, err = run_cli(monkeypatch, capsys, "predict", models["int8.tflite"], folder, "--json",
                           "--heatmap", tmp_path / "maps")
    assert code == 0 and sizes == [1] * 24, err


def test_threshold_option_overrides_the_metadata(models, tiny_kaggle, monkeypatch, capsys):
    folder = tiny_kaggle / "test" / "NORMAL"
    code, out, _ = run_cli(monkeypatch, capsys, "predict", models["fp32.tflite"], folder, "--json", "--threshold", "0")
    assert code == 0
    assert {row["label"] for row in json_lines(out)} == {"PNEUMONIA"}
    code, out, _ = run_cli(monkeypatch, capsys, "predict", models["fp32.tflite"], folder, "--json", "--threshold", "1")
    rows = json_lines(out)
    assert all(row["threshold"] == 1.0 for row in rows)
    assert all(row["label"] == "NORMAL" for row in rows if row["probability"] < 1.0)


def test_csv_and_summary_files(models, tiny_kaggle, tmp_path, monkeypatch, capsys):
    target, summary = tmp_path / "out" / "predictions.csv", tmp_path / "summary.json"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    code, out, err = run_cli(monkeypatch, capsys, "predict", models["int8.tflite"], tiny_kaggle / "test" / "PNEUMONIA",
                             bad, "--csv", target, "--summary", summary, "--threads", "1", "--batch-size", "5")
    assert code == 1, err
    with target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 13
    assert rows[-1]["path"] == str(bad) and rows[-1]["label"] == "" and "not an image" in rows[-1]["error"]
    assert all(0.0 <= float(r["probability"]) <= 1.0 for r in rows[:-1])
    data = json.loads(summary.read_text())
    assert data["n_predicted"] == 12 and data["n_skipped"] == 1
    assert sum(data["counts"].values()) == 12
    assert not list(target.parent.glob(".*partial*")), "temporary file left behind"


def test_table_for_people(models, tiny_kaggle, monkeypatch, capsys):
    image = sorted((tiny_kaggle / "test" / "NORMAL").iterdir())[0]
    code, out, err = run_cli(monkeypatch, capsys, "predict", models["int8.tflite"], image)
    assert code == 0
    assert image.name[:12] in out and ("NORMAL" in out or "PNEUMONIA" in out)
    assert "1 predicted" in err and "0 skipped" in err


def test_usage_errors_exit_2(models, tiny_kaggle, tmp_path, monkeypatch, capsys):
    folder = tiny_kaggle / "test"
    code, _, err = run_cli(monkeypatch, capsys, "predict", models["int8.tflite"], folder, "--json", "--csv", tmp_path / "x.csv")
    assert code == 2 and "--json" in err
    code, _, err = run_cli(monkeypatch, capsys, "predict", models["int8.tflite"], tmp_path / "missing.jpg")
    assert code == 2 and "no such file or folder" in err
    code, _, err = run_cli(monkeypatch, capsys, "predict", models["int8.tflite"], folder, "--threshold", "1.5")
    assert code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(monkeypatch, capsys, "predict", models["int8.tflite"], empty)
    assert code == 2 and "no images found" in err
    (tmp_path / "model.h5").write_bytes(b"HDF")
    code, _, err = run_cli(monkeypatch, capsys, "predict", tmp_path / "model.h5", folder)
    assert code == 2 and ".tflite and .onnx" in err
    code, _, err = run_cli(monkeypatch, capsys, "predict", tmp_path / "no-such-model", folder)
    assert code == 2 and f"model file not found: {tmp_path / 'no-such-model'}" in err


def copy_model(model: Path, target_dir: Path) -> Path:
    target_dir.mkdir(exist_ok=True)
    copy = target_dir / model.name
    shutil.copy(model, copy)
    shutil.copy(metadata_path(model), metadata_path(copy))
    return copy


@pytest.mark.parametrize("artifact", ["int8.tflite", "int8.onnx"])
def test_sha256_mismatch_is_refused_unless_trusted(models, tiny_kaggle, tmp_path, monkeypatch, capsys, artifact):
    model = copy_model(models[artifact], tmp_path / "swapped")
    md = json.loads(metadata_path(model).read_text())
    md["sha256"] = "0" * 64
    metadata_path(model).write_text(json.dumps(md))
    image = sorted((tiny_kaggle / "test" / "NORMAL").iterdir())[0]
    code, out, err = run_cli(monkeypatch, capsys, "predict", model, image, "--json")
    assert code == 2 and "does not match the sha256" in err and out == ""
    code, out, err = run_cli(monkeypatch, capsys, "predict", model, image, "--json", "--trust")
    assert code == 0 and json_lines(out)[0]["label"] in ("NORMAL", "PNEUMONIA")


def test_missing_or_invalid_metadata_is_refused(models, tiny_kaggle, tmp_path, monkeypatch, capsys):
    image = sorted((tiny_kaggle / "test" / "NORMAL").iterdir())[0]
    model = copy_model(models["int8.tflite"], tmp_path / "nometa")
    metadata_path(model).unlink()
    code, _, err = run_cli(monkeypatch, capsys, "predict", model, image, "--trust")
    assert code == 2 and "no metadata" in err
    model = copy_model(models["int8.tflite"], tmp_path / "badjson")
    metadata_path(model).write_text("{not json")
    code, _, err = run_cli(monkeypatch, capsys, "predict", model, image)
    assert code == 2 and "not valid JSON" in err
    model = copy_model(models["int8.tflite"], tmp_path / "badspec")
    md = json.loads(metadata_path(model).read_text())
    md["preprocessing"]["channels"] = 2
    write_resealed(model, md)
    code, _, err = run_cli(monkeypatch, capsys, "predict", model, image)
    assert code == 2 and "channels" in err


def test_corrupt_model_file_is_a_clear_error(models, tiny_kaggle, tmp_path, monkeypatch, capsys):
    model = copy_model(models["int8.tflite"], tmp_path / "corrupt")
    model.write_bytes(b"\x00" * 64)
    image = sorted((tiny_kaggle / "test" / "NORMAL").iterdir())[0]
    code, _, err = run_cli(monkeypatch, capsys, "predict", model, image, "--trust")
    assert code == 2 and "cannot load it" in err


def test_doctor_reports_runtime_and_model(models, tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "doctor", models["int8.tflite"])
    assert code == 0, err
    assert ".tflite models run on: ai-edge-litert" in err
    assert "model OK" in err and "int8" in err
    assert "input gate: cheap checks on; learned check unavailable: too few validation images" in " ".join(err.split())
    broken = copy_model(models["int8.tflite"], tmp_path / "doctor")
    metadata_path(broken).unlink()
    code, _, err = run_cli(monkeypatch, capsys, "doctor", broken)
    assert code == 2 and "model NOT OK" in err and "no metadata" in err
    code, _, err = run_cli(monkeypatch, capsys, "doctor", tmp_path / "no-such-model")
    unwrapped = "".join(err.split())  # rich wraps the table's lines
    assert code == 2 and "".join(f"model file not found: {tmp_path / 'no-such-model'}".split()) in unwrapped


def non_xray_folder(folder: Path, xrays: list[Path]) -> dict[str, str]:
    """Real X-rays plus what a clinic should never get a diagnosis for: {file name: words of its reason}."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True)
    for path in xrays:
        shutil.copy(path, folder / path.name)
    Image.new("L", (1, 1), 0).save(folder / "dot.png")
    Image.new("L", (600, 400), 255).save(folder / "blank.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 65536, (300, 300), dtype=np.uint16)).save(folder / "noise16.png")
    page = Image.new("L", (640, 480), 255)
    for top in range(10, 460, 24):
        ImageDraw.Draw(page).text((20, top), "Discharge letter: amoxicillin for seven days.", fill=0)
    page.save(folder / "letter.png")
    return {"dot.png": "too small", "blank.png": "nearly uniform", "noise16.png": "noise", "letter.png": "flat tone"}


def test_not_a_chest_xray_in_json_csv_table_and_summary(models, tiny_kaggle, tmp_path, monkeypatch, capsys):
    xrays = sorted((tiny_kaggle / "test" / "NORMAL").iterdir())[:3]
    folder = tmp_path / "inbox"
    expected = non_xray_folder(folder, xrays)
    summary = tmp_path / "summary.json"
    code, out, err = run_cli(monkeypatch, capsys, "predict", models["int8.tflite"], folder, "--json",
                             "--summary", summary)
    assert code == 0, err  # a refusal is a result, not an error
    rows = {Path(r["path"]).name: r for r in json_lines(out)}
    for name, words in expected.items():
        row = rows[name]
        assert row["label"] == "not_cxr" and row["probability"] is None and row["error"] is None, row
        assert words in row["reason"]
    for path in xrays:
        assert rows[path.name]["label"] in ("NORMAL", "PNEUMONIA") and rows[path.name]["reason"] is None
    flat = " ".join(err.split())
    assert "3 predicted" in flat and "4 not a chest X-ray" in flat and "0 skipped" in flat
    assert "not a chest X-ray" in flat and "letter.png" in flat
    data = json.loads(summary.read_text())
    assert data["n_refused"] == 4 and data["n_predicted"] == 3 and data["n_images"] == 7
    assert sorted(Path(r["path"]).name for r in data["refused"]) == sorted(expected)
    assert data["site_monitor"]["verdict"] in ("unavailable", "needs_more_images")

    target = tmp_path / "out.csv"
    code, _, _ = run_cli(monkeypatch, capsys, "predict", models["int8.onnx"], folder, "--csv", target)
    assert code == 0
    with target.open(newline="") as handle:
        by_name = {Path(r["path"]).name: r for r in csv.DictReader(handle)}
    assert by_name["noise16.png"]["label"] == "not_cxr" and "noise" in by_name["noise16.png"]["reason"]
    assert by_name["noise16.png"]["probability"] == ""

    monkeypatch.setenv("COLUMNS", "250")  # the table on one line per image
    code, out, err = run_cli(monkeypatch, capsys, "predict", models["fp32.tflite"], folder / "blank.png")
    assert code == 0 and "not a chest X-ray: nearly uniform" in out


def test_doctor_says_whether_the_model_carries_the_gate(tiny_run, xray_pool, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "doctor", gated_artifacts(tiny_run, xray_pool)["int8.onnx"])
    flat = " ".join(err.split())
    assert code == 0 and "learned check on (64 features and the input's layout" in flat
    assert "site monitor: on (mean shift of the outputs and the film layout, nulls drawn by patient" in flat
    code, _, err = run_cli(monkeypatch, capsys, "doctor", legacy_artifacts(tiny_run)["int8.tflite"])
    flat = " ".join(err.split())
    assert code == 0 and "model OK" in flat and "no feature output" in flat and "site monitor: unavailable" in flat
