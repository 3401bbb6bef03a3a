"""What a careless or hostile file system hands `edgecxr predict`: names that are not UTF-8 or that a
spreadsheet would run, FIFOs, devices and dangling links, as arguments or inside a folder. Each is one
skipped row or a safe cell, never a traceback, a hang or an unbounded read."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest
from cli_runner import run_cli
from edge_artifacts import edge_artifacts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]  # a FIFO that blocked would hang: fail instead


@pytest.fixture(scope="module")
def model(tiny_run) -> Path:
    return edge_artifacts(tiny_run)["int8.tflite"]


@pytest.fixture()
def film(tiny_kaggle) -> Path:
    return sorted((tiny_kaggle / "test" / "NORMAL").iterdir())[0]


def csv_rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_name_that_is_not_utf8_reaches_the_csv_escaped(model, film, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "films"
    folder.mkdir()
    odd = os.fsencode(folder) + b"/caf\xe9.jpeg"  # Latin-1 bytes from an old USB stick
    shutil.copy(film, odd)
    out = tmp_path / "out.csv"
    code, _, err = run_cli(monkeypatch, capsys, "predict", model, folder, "--csv", out)
    assert code == 0 and "Traceback" not in err, err
    (row,) = csv_rows(out)
    assert row["path"].endswith("caf\\udce9.jpeg") and row["label"] in ("NORMAL", "PNEUMONIA")
    code, out_text, err = run_cli(monkeypatch, capsys, "predict", model, folder, "--json")
    assert code == 0 and "caf\\\\udce9.jpeg" in out_text


def test_formula_like_names_are_quoted_in_the_csv(model, film, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("=1+1.jpeg", "@SUM(A1).jpeg", "-2+3.jpeg"):
        shutil.copy(film, tmp_path / name)
    code, _, err = run_cli(monkeypatch, capsys, "predict", model, "--csv", "out.csv", "--", "=1+1.jpeg",
                           "@SUM(A1).jpeg", "-2+3.jpeg")
    assert code == 0, err
    assert [row["path"] for row in csv_rows(tmp_path / "out.csv")] == ["'=1+1.jpeg", "'@SUM(A1).jpeg", "'-2+3.jpeg"]


def test_a_fifo_and_a_device_given_as_arguments_are_skipped_without_reading(model, film, tmp_path, monkeypatch,
                                                                          capsys):
    fifo = tmp_path / "film.jpeg"
    os.mkfifo(fifo)  # no writer: opening it for reading the ordinary way would block for ever
    code, out, err = run_cli(monkeypatch, capsys, "predict", model, fifo, "/dev/zero", film, "--json")
    assert code == 1 and "Traceback" not in err
    rows = [__import__("json").loads(line) for line in out.splitlines()]
    assert [r["error"] is not None for r in rows] == [True, True, False]
    assert all("not a regular file" in r["error"] for r in rows[:2])


def test_special_files_in_a_folder_are_listed_as_skipped(model, film, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "films"
    folder.mkdir()
    shutil.copy(film, folder / "good.jpeg")
    os.mkfifo(folder / "pipe.jpeg")
    os.mkfifo(folder / "IM000002")  # suffix-less, as PACS exports name films: never opened to peek
    (folder / "gone.jpeg").symlink_to(tmp_path / "deleted.jpeg")
    out = tmp_path / "out.csv"
    code, _, err = run_cli(monkeypatch, capsys, "predict", model, folder, "--csv", out)
    assert code == 1 and "Traceback" not in err
    rows = {Path(row["path"]).name: row for row in csv_rows(out)}
    assert sorted(rows) == ["IM000002", "gone.jpeg", "good.jpeg", "pipe.jpeg"]
    assert rows["good.jpeg"]["label"] in ("NORMAL", "PNEUMONIA")
    assert "not a regular file" in rows["pipe.jpeg"]["error"] and "not a regular file" in rows["IM000002"]["error"]
    assert "cannot read" in rows["gone.jpeg"]["error"]
    assert "3 skipped" in " ".join(err.split())


def test_a_file_past_the_byte_budget_is_refused_before_it_is_read(model, tmp_path, monkeypatch, capsys):
    from edgecxr.edge_runtime.decode_budget import MAX_FILE_BYTES

    big = tmp_path / "huge.jpeg"
    with big.open("wb") as handle:  # sparse: no disk used
        handle.truncate(MAX_FILE_BYTES + 1)
    code, out, err = run_cli(monkeypatch, capsys, "predict", model, big, "--json")
    assert code == 1 and "file too large" in out
