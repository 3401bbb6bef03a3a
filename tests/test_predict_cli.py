"""`edgecxr predict` and `edgecxr doctor` end to end, in-process, on real tiny models and real X-rays."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

from edge_artifacts import edge_artifacts
from edgecxr.cli import main
from edgecxr.edge_runtime.metadata import metadata_path
from edgecxr.edge_runtime.predictor import Predictor


@pytest.fixture(scope="module")
def models(tiny_run):
    return edge_artifacts(tiny_run)


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["edgecxr", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


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
    metadata_path(model).write_text(json.dumps(md))
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
    broken = copy_model(models["int8.tflite"], tmp_path / "doctor")
    metadata_path(broken).unlink()
    code, _, err = run_cli(monkeypatch, capsys, "doctor", broken)
    assert code == 2 and "model NOT OK" in err and "no metadata" in err
    code, _, err = run_cli(monkeypatch, capsys, "doctor", tmp_path / "no-such-model")
    unwrapped = "".join(err.split())  # rich wraps the table's lines
    assert code == 2 and "".join(f"model file not found: {tmp_path / 'no-such-model'}".split()) in unwrapped
