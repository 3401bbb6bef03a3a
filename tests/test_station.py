"""`edgecxr serve` over real HTTP: a real server process on a free loopback port, a tiny real model,
real X-rays. What the page relies on, the log that loses nothing (kill -9 included), and the limits."""

from __future__ import annotations

import csv
import io
import os
import signal
import sqlite3
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from station_helpers import colour_photo_jpeg, host_address, station_model, xray_paths

from edgecxr.benchmarks.measure.station_load import LOG_FILE, post_files, start_server, stop_server
from edgecxr.edge_runtime.python_command import ISOLATED_PYTHON

LABELS = {"NORMAL", "PNEUMONIA"}


@pytest.fixture(scope="module")
def model(tiny_run, xray_pool) -> Path:
    return station_model(tiny_run, xray_pool)


@pytest.fixture()
def server(model, tmp_path):
    data_dir = tmp_path / "station"
    process, base, printed = start_server(model, data_dir, args=("--keep-images",))
    yield base, data_dir, printed
    stop_server(process)


def get(url: str, token: str | None = None) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def db_rows(data_dir: Path) -> list[dict]:
    with sqlite3.connect(data_dir / LOG_FILE) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM results ORDER BY id")]


def test_a_real_xray_gets_a_result_that_is_already_in_the_log(server, xray_pool):
    base, data_dir, printed = server
    assert f"open {base}/" in printed
    path = xray_paths(xray_pool, 1)[0]
    status, body = post_files(base, [(path.name, path.read_bytes())], reference="bed 12")
    assert status == 200
    (item,) = body["results"]
    assert item["result"] in LABELS and item["gate"] == "accepted"
    assert 0.0 <= item["probability"] <= 1.0 and item["film"].startswith("data:image/png;base64,")
    assert item["monitor"] == "needs_more_images" and "at least 20" in item["monitor_message"]
    (row,) = db_rows(data_dir)
    assert (row["id"], row["file_name"], row["reference"], row["result"]) == (item["id"], path.name, "bed 12",
                                                                               item["result"])
    import hashlib

    assert row["image_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert row["model_sha256"] and row["commissioning"] == "none" and row["probability"] == item["probability"]


def test_bad_files_and_a_photo_get_one_line_answers_and_are_logged(server, xray_pool):
    base, data_dir, _ = server
    film = xray_paths(xray_pool, 1)[0].read_bytes()
    uploads = [("notes.txt", b"not an image at all\n"), ("empty.jpeg", b""), ("cut.jpeg", film[: len(film) // 3]),
               ("holiday.jpeg", colour_photo_jpeg())]
    status, body = post_files(base, uploads)
    assert status == 200
    results = {item["file_name"]: item for item in body["results"]}
    for name in ("notes.txt", "empty.jpeg", "cut.jpeg"):
        assert results[name]["result"] == "unreadable", results[name]
        assert results[name]["error"] and "\n" not in results[name]["error"]
        assert "Traceback" not in results[name]["error"]
    photo = results["holiday.jpeg"]
    assert photo["result"] == "not_cxr" and photo["probability"] is None and photo["label_text"] == "not a chest X-ray"
    assert photo["gate"] != "accepted" and "\n" not in photo["gate"]
    assert [r["result"] for r in db_rows(data_dir)] == ["unreadable", "unreadable", "unreadable", "not_cxr"]


def test_file_names_are_text_never_paths(server, xray_pool):
    base, data_dir, _ = server
    data = xray_paths(xray_pool, 1)[0].read_bytes()
    status, body = post_files(base, [("../../../etc/evil.jpeg", data), ("..\\..\\win.jpeg", data)])
    assert status == 200
    assert [item["file_name"] for item in body["results"]] == ["evil.jpeg", "win.jpeg"]
    kept = sorted(p.name for p in (data_dir / "images").iterdir())
    import hashlib

    assert kept == [hashlib.sha256(data).hexdigest() + ".jpeg"]  # one file, named by its content
    assert not (data_dir.parent / "evil.jpeg").exists() and not list(data_dir.parent.rglob("*evil*"))


def test_no_listing_and_nothing_outside_the_page(server):
    base, _, _ = server
    for path in ("/static/", "/static/..%2Fapp.py", "/static/index.html.bak", "/images/", "/station.sqlite3",
                 "/api/", "/static/../app.py"):
        status, body, _ = get(base + path)
        assert status in (404, 405), (path, status)
    status, body, headers = get(base + "/")
    assert status == 200 and b"edgecxr station" in body
    assert "default-src 'none'" in headers["content-security-policy"]
    # Everything the page loads is its own: no http(s) URL anywhere in its assets.
    for name in ("/", "/static/app.js", "/static/style.css"):
        status, body, _ = get(base + name)
        assert status == 200 and b"http://" not in body and b"https://" not in body, name


def test_csv_export_holds_every_row(server, xray_pool):
    base, _, _ = server
    paths = xray_paths(xray_pool, 3)
    post_files(base, [(p.name, p.read_bytes()) for p in paths], reference="=HYPERLINK(1)")
    status, body, headers = get(base + "/export.csv")
    assert status == 200 and "attachment" in headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [r["file_name"] for r in rows] == [p.name for p in paths]
    assert all(r["reference"] == "'=HYPERLINK(1)" for r in rows)  # not a formula in a spreadsheet
    assert all(r["result"] in LABELS and float(r["threshold"]) > 0 for r in rows)
    status, body, _ = get(base + "/api/results")
    assert status == 200 and len(__import__("json").loads(body)["rows"]) == 3


def test_the_model_card_says_what_it_is_for(server, model):
    base, _, _ = server
    import json

    from edgecxr.edge_runtime.metadata import read_metadata

    status, body, _ = get(base + "/api/card")
    card = json.loads(body)
    metadata = read_metadata(model)
    assert status == 200 and "not a diagnosis" in card["intended_use"]
    assert card["sha256"] == metadata.sha256 and card["threshold"] == metadata.threshold
    assert card["edgecxr_version"] and card["input_gate"]["learned_check"] == "on"


def test_concurrent_uploads_all_reach_the_log(server, xray_pool):
    base, data_dir, _ = server
    paths = xray_paths(xray_pool, 8)
    answers, lock = [], threading.Lock()

    def client(offset: int) -> None:
        for path in paths[offset::4]:
            status, body = post_files(base, [(path.name, path.read_bytes())])
            with lock:
                answers.append((status, body["results"][0]["id"]))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(status for status, _ in answers) == [200] * 8
    assert sorted(i for _, i in answers) == [r["id"] for r in db_rows(data_dir)]


def test_upload_size_and_count_limits(model, tmp_path, xray_pool):
    process, base, _ = start_server(model, tmp_path / "station", args=("--max-upload-mb", "1", "--max-files", "2"))
    try:
        film = xray_paths(xray_pool, 1)[0].read_bytes()
        status, body = post_files(base, [("a.jpeg", film)] * 3)
        assert status == 400 and "bad upload" in body["error"]
        status, body = post_files(base, [("huge.png", b"\0" * (3 * 1024 * 1024))])
        assert status == 413 and "upload too large" in body["error"]
        status, body = post_files(base, [("big.png", b"\0" * (1536 * 1024))])
        assert status == 200 and body["results"][0]["error"].startswith("file too large")
        status, body = post_files(base, [("a.jpeg", film)] * 2)
        assert status == 200 and [r["result"] in LABELS for r in body["results"]] == [True, True]
    finally:
        stop_server(process)


def test_off_loopback_the_token_is_required(model, tmp_path, xray_pool):
    host = host_address() or "0.0.0.0"
    process, base, printed = start_server(model, tmp_path / "station", host=host)
    try:
        assert "access token required (off loopback)" in printed
        token = printed.split("?token=")[1].split()[0]
        for path in ("/", "/api/card", "/export.csv", "/static/app.js"):
            status, body, _ = get(base + path)
            assert status == 401 and b"access token required" in body, path
        assert get(base + "/api/card", token="wrong-" + token)[0] == 401
        film = xray_paths(xray_pool, 1)[0]
        assert post_files(base, [(film.name, film.read_bytes())])[0] == 401
        assert not (tmp_path / "station" / LOG_FILE).exists() or not db_rows(tmp_path / "station")
        assert get(base + "/api/card", token=token)[0] == 200
        status, body = post_files(base, [(film.name, film.read_bytes())], token=token)
        assert status == 200 and body["results"][0]["result"] in LABELS
    finally:
        stop_server(process)


def test_on_loopback_no_token_is_asked(server):
    base, _, printed = server
    assert "?token=" not in printed and "access token" not in printed and get(base + "/api/card")[0] == 200


def test_kill_9_loses_nothing_already_answered(model, tmp_path, xray_pool):
    data_dir = tmp_path / "station"
    process, base, _ = start_server(model, data_dir)
    paths = xray_paths(xray_pool, 12)
    answered = []
    try:
        for path in paths[:10]:
            status, body = post_files(base, [(path.name, path.read_bytes())])
            assert status == 200
            answered.append((body["results"][0]["id"], path.name))
        def send_and_lose() -> None:
            try:
                post_files(base, [(p.name, p.read_bytes()) for p in paths[10:]], timeout=30)
            except OSError:
                pass  # the server dies under it: this request is the one allowed to be lost

        in_flight = threading.Thread(target=send_and_lose, daemon=True)
        in_flight.start()
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        stop_server(process)
    with sqlite3.connect(data_dir / LOG_FILE) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = {(r["id"], r["file_name"]) for r in db_rows(data_dir)}
    assert set(answered) <= rows and len(rows) <= 12
    # The station starts again on the same log and carries on.
    process, base, _ = start_server(model, data_dir)
    try:
        status, body = post_files(base, [(paths[0].name, paths[0].read_bytes())])
        assert status == 200 and body["results"][0]["id"] > max(i for i, _ in answered)
    finally:
        stop_server(process)


def test_a_taken_port_is_one_line(model, tmp_path):
    import socket
    import subprocess

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run([*ISOLATED_PYTHON, "-c", "import sys; sys.argv[0] = 'edgecxr'; from edgecxr.cli import "
                               "main; main()", "serve", str(model), "--port", str(port), "--data-dir",
                               str(tmp_path / "d")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error: cannot listen on 127.0.0.1" in done.stderr + done.stdout and "Traceback" not in done.stdout + done.stderr


def test_a_dicom_film_is_read_like_its_jpeg(server, xray_pool, tmp_path):
    from station_helpers import dicom_film

    base, data_dir, _ = server
    jpeg = xray_paths(xray_pool, 1)[0]
    dicom = dicom_film(jpeg, tmp_path / "film.dcm")
    status, body = post_files(base, [("IM0001", dicom.read_bytes()), (jpeg.name, jpeg.read_bytes())])
    assert status == 200
    from_dicom, from_jpeg = body["results"]
    assert from_dicom["result"] == from_jpeg["result"] and from_dicom["result"] in LABELS
    assert abs(from_dicom["probability"] - from_jpeg["probability"]) < 0.05
    assert from_dicom["film"].startswith("data:image/png") and from_dicom["heatmap"].startswith("data:image/png")
    assert sorted(p.suffix for p in (data_dir / "images").iterdir()) == [".dcm", ".jpeg"]


def test_the_card_comes_from_the_sealed_metadata_alone(model, tiny_run, tiny_kaggle, tmp_path):
    import json
    import shutil

    from typer.testing import CliRunner

    from edgecxr.cli import app
    from edgecxr.edge_runtime.metadata import metadata_path, read_metadata
    from edgecxr.edge_runtime.model_card import commissioning_text, model_card

    validation = json.loads((tiny_run / "metrics.json").read_text())["validation"]
    card = model_card(model, read_metadata(model), "ai-edge-litert", "on")
    (tn, fp), (fn, tp) = validation["confusion_matrix"]
    assert card["validated"]["sensitivity"]["n"] == tp + fn and card["validated"]["specificity"]["n"] == tn + fp
    low, high = card["validated"]["accuracy"]["ci95"]
    assert low <= card["validated"]["accuracy"]["value"] <= high
    assert card["commissioned"] is None and "picked on validation only" in card["threshold_rule"]

    # A copy far from its run folder (as a bundle installs it) shows the same figures: nothing else is read.
    alone = tmp_path / model.name
    shutil.copy(model, alone)
    shutil.copy(metadata_path(model), metadata_path(alone))
    assert model_card(alone, read_metadata(alone), "ai-edge-litert", "on")["validated"] == card["validated"]

    result = CliRunner().invoke(app, ["commission", str(alone), str(tiny_kaggle / "test"), "--site", "clinic-a"])
    assert result.exit_code == 0, result.output
    (site_model,) = tmp_path.glob("*.site-clinic-a.tflite")
    metadata = read_metadata(site_model)
    card = model_card(site_model, metadata, "ai-edge-litert", "on")
    assert card["commissioned"]["site"] == "clinic-a" and card["threshold"] == metadata.threshold
    assert "sensitivity" in card["commissioned"]["at_site_threshold"]
    # The site's rule replaces the validated one, in words the card shows.
    assert card["threshold_rule"].startswith("site rule of clinic-a: ") and "validation only" not in card["threshold_rule"]
    assert card["threshold_rule"].endswith(metadata.commissioning["rule"])
    assert commissioning_text(metadata).startswith("site clinic-a, ")


def test_evaluate_on_another_site_reaches_every_artifacts_card(tiny_run, tiny_kaggle, tmp_path):
    import shutil

    from edgecxr.convert.exporter import ConvertOptions, convert_run
    from edgecxr.edge_runtime.metadata import read_metadata
    from edgecxr.edge_runtime.model_card import model_card
    from edgecxr.train.evaluate import evaluate

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    measured = evaluate(run, tiny_kaggle / "test")
    results = convert_run(ConvertOptions(run=run, quantize="none", format="tflite", out=run / "export", verify=False))
    (artifact,) = [Path(r.path) for r in results]
    (site,) = model_card(artifact, read_metadata(artifact), "ai-edge-litert", "on")["other_sites"]
    (tn, fp), (fn, tp) = measured["confusion_matrix"]
    assert site["sensitivity"]["n"] == tp + fn and site["sensitivity"]["successes"] == tp
    assert site["specificity"]["successes"] == tn and site["data"] == f"{tiny_kaggle.name}/test"
    assert "Keras model" in site["scored"]


def test_on_loopback_a_foreign_host_name_is_turned_away(server):
    base, _, _ = server
    request = urllib.request.Request(base + "/api/results", headers={"Host": "attacker.example"})
    try:
        urllib.request.urlopen(request, timeout=30)
        raise AssertionError("a foreign Host header was served")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400 and b"unexpected Host header" in exc.read()
    port = base.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        request = urllib.request.Request(base + "/api/results", headers={"Host": host})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
