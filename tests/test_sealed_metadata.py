"""The metadata beside a model is sealed: an edited field that changes an answer (labels, threshold,
preprocessing, gate reference, commissioning record) is refused in one line with exit code 2 by predict,
doctor, commission, serve and bundle, like a changed model file. --trust runs it and says so every time."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import run_cli
from edge_artifacts import edge_artifacts, write_resealed

from edgecxr.edge_runtime.metadata import metadata_path, read_metadata

pytestmark = pytest.mark.slow

EDITS = {
    "positive_label": lambda d: d.update(positive_label="NORMAL"),
    "threshold": lambda d: d.update(threshold=0.99),
    "equalize": lambda d: d["preprocessing"].update(equalize="none"),
    "input_height": lambda d: d["preprocessing"].update(height=32),
    "commissioning": lambda d: d["details"].update(commissioning={"site": "nowhere", "threshold": 0.1}),
}


def edited_copy(model: Path, folder: Path, edit) -> Path:
    folder.mkdir(parents=True)
    copy = folder / model.name
    shutil.copy(model, copy)
    document = json.loads(metadata_path(model).read_text())
    edit(document)
    metadata_path(copy).write_text(json.dumps(document, indent=2))  # by hand, as a careless editor would
    return copy


@pytest.fixture(scope="module")
def film(tiny_kaggle) -> Path:
    return sorted((tiny_kaggle / "test" / "NORMAL").iterdir())[0]


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("artifact", ["int8.tflite", "int8.onnx"])
@pytest.mark.parametrize("field", sorted(EDITS))
def test_predict_refuses_an_edited_field(tiny_run, film, tmp_path, monkeypatch, capsys, artifact, field):
    model = edited_copy(edge_artifacts(tiny_run)[artifact], tmp_path / "edited", EDITS[field])
    code, out, err = run_cli(monkeypatch, capsys, "predict", model, film, "--json")
    assert code == 2 and out == ""
    assert "was edited after it was written" in one_line(err)


def test_every_command_refuses_it(tiny_run, tiny_kaggle, film, tmp_path, monkeypatch, capsys):
    model = edited_copy(edge_artifacts(tiny_run)["int8.tflite"], tmp_path / "edited", EDITS["threshold"])
    for args in (["doctor", model], ["commission", model, tiny_kaggle / "test"],
                 ["bundle", model, "--platform", "x86_64", "--out", tmp_path / "bundle"]):
        code, _, err = run_cli(monkeypatch, capsys, *args)
        assert code == 2 and "was edited after it was written" in " ".join(err.split()), (args, err)
    assert not (tmp_path / "bundle").exists() or not any((tmp_path / "bundle").iterdir())
    assert sorted(p.name for p in model.parent.iterdir()) == [model.name, metadata_path(model).name]
    # serve refuses before it binds a port: a station never starts on metadata nobody validated.
    done = subprocess.run([sys.executable, "-P", "-m", "edgecxr.cli", "serve", str(model), "--port", "0",
                           "--data-dir", str(tmp_path / "station")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "was edited after it was written" in " ".join(done.stderr.split()), done.stderr
    assert "Traceback" not in done.stderr


def test_trust_runs_it_and_warns_on_every_run(tiny_run, film, tmp_path, monkeypatch, capsys):
    model = edited_copy(edge_artifacts(tiny_run)["int8.tflite"], tmp_path / "edited", EDITS["threshold"])
    for _ in range(2):
        code, out, err = run_cli(monkeypatch, capsys, "predict", model, film, "--json", "--trust")
        assert code == 0 and json.loads(out.splitlines()[0])["threshold"] == 0.99
        assert "--trust" in err and "was edited after it was written" in " ".join(err.split())
    intact = edge_artifacts(tiny_run)["int8.tflite"]
    code, _, err = run_cli(monkeypatch, capsys, "predict", intact, film, "--json", "--trust")
    assert code == 0 and "runs unchecked: its sha256 and seal match" in " ".join(err.split())


def test_a_resealed_edit_is_read_and_an_unsealed_file_is_read_with_a_warning(tiny_run, film, tmp_path,
                                                                             monkeypatch, capsys):
    source = edge_artifacts(tiny_run)["int8.tflite"]
    model = edited_copy(source, tmp_path / "resealed", EDITS["threshold"])
    write_resealed(model, json.loads(metadata_path(model).read_text()))
    assert read_metadata(model).threshold == 0.99  # the writer's own path: sealed again
    # Metadata from before the seal (existing run folders): read, and running it says it is unsealed.
    unsealed = edited_copy(source, tmp_path / "unsealed", lambda d: d.pop("seal"))
    assert read_metadata(unsealed).sealed is False and read_metadata(source).sealed is True
    code, _, err = run_cli(monkeypatch, capsys, "predict", unsealed, film, "--json")
    assert code == 0 and "metadata is unsealed" in " ".join(err.split())
    code, _, err = run_cli(monkeypatch, capsys, "predict", source, film, "--json")
    assert code == 0 and "unsealed" not in err


def test_a_metadata_of_another_input_size_is_one_line_even_trusted(tiny_run, film, tmp_path, monkeypatch, capsys):
    model = edited_copy(edge_artifacts(tiny_run)["int8.tflite"], tmp_path / "other", EDITS["input_height"])
    write_resealed(model, json.loads(metadata_path(model).read_text()))
    for extra in ([], ["--trust"]):
        code, _, err = run_cli(monkeypatch, capsys, "predict", model, film, *extra)
        assert code == 2 and "but its metadata's preprocessing makes 32x64x1" in " ".join(err.split()), err
        assert "Traceback" not in err


def test_a_string_that_shows_a_list_of_numbers_is_written_as_it_is(tiny_run, tmp_path):
    """The metadata file lays number lists on one line; text that looks like one (a rule quoting
    "sizes [20, 50]") must not be rewritten, or the file would no longer match its own seal."""
    model = tmp_path / "model_int8.tflite"
    shutil.copy(edge_artifacts(tiny_run)["int8.tflite"], model)
    shutil.copy(metadata_path(edge_artifacts(tiny_run)["int8.tflite"]), metadata_path(model))
    metadata = read_metadata(model)
    metadata.details["note"] = "drawn at sizes [20, 50, 100]"
    metadata.details["sizes"] = [20, 50, 100]
    from edgecxr.edge_runtime.metadata import write_metadata

    write_metadata(model, metadata)
    again = read_metadata(model)  # refused if the seal no longer matched
    assert again.details["note"] == "drawn at sizes [20, 50, 100]" and again.details["sizes"] == [20, 50, 100]
    text = metadata_path(model).read_text(encoding="utf-8")
    assert '"sizes": [20,50,100]' in text and '"note": "drawn at sizes [20, 50, 100]"' in text
