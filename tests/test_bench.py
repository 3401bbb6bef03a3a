"""`edgecxr bench` on a tiny real model: the JSON schema, every artifact present, fidelity to Keras.

The run is converted with the project's own converter, then two artifacts are added by hand: one
whose network was deliberately altered (it must show disagreement with Keras) and one that cannot
be loaded (it must appear as a failed row, not stop the bench). A failed export recorded in
verify.json must appear as a row too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecxr.edge_runtime.formats import EDGE_SUFFIXES

from edgecxr.benchmarks.artifacts import Candidate, select
from edgecxr.benchmarks.bench import JSON_FILE, MARKDOWN_FILE, BenchConfig, run_bench
from edgecxr.edge_runtime.atomic import json_safe
from edgecxr.benchmarks.devices import get_device
from edgecxr.benchmarks.worker import timing_summary
from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.folders import labelled_images
from edgecxr.edge_runtime.metadata import read_metadata, write_metadata
from edgecxr.edge_runtime.preprocessing import preprocess
from edgecxr.edge_runtime.python_command import ISOLATED_PYTHON, python_module

REQUIRED_ROW_FIELDS = {
    "name", "format", "quantization", "size_mb", "accuracy", "sensitivity", "specificity", "roc_auc", "agreement",
    "max_abs_diff", "latency_ms_p50", "latency_ms_p95", "throughput_ips", "cold_start_s", "peak_rss_mb", "threads",
    "batch_size", "status", "reason", "f1", "parameters",
}
MACHINE_FIELDS = {"cpu_model", "logical_cores", "os", "python", "versions", "date"}
ALTERED = "model_altered.tflite"
BROKEN = "model_broken.onnx"
MISSING = "model_fp16.tflite"
REPO = Path(__file__).resolve().parents[1]


def altered_tflite(run: Path, target: Path, images: list[Path]) -> np.ndarray:
    """A TFLite copy of the run's model whose output bias pushes every image to the class Keras
    predicts least: it must disagree with Keras. Returns the Keras probabilities it was based on."""
    import keras
    import tensorflow as tf

    metadata = read_metadata(run / "model.keras")
    model = keras.models.load_model(run / "model.keras", compile=False)
    inputs = np.stack([preprocess(p, metadata.preprocessing) for p in images]).astype(np.float32)
    reference = np.asarray(model(inputs, training=False)).reshape(-1)
    majority_positive = np.mean(reference >= metadata.threshold) >= 0.5
    output = model.get_layer("pneumonia")
    kernel, bias = output.get_weights()
    output.set_weights([kernel, bias + (-60.0 if majority_positive else 60.0)])
    target.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    metadata.format, metadata.quantization, metadata.details = "tflite", "none", {"altered": "output bias shifted"}
    write_metadata(target, metadata)
    return reference


@pytest.fixture(scope="module")
def bench_setup(tiny_run, tiny_kaggle, tmp_path_factory):
    from edgecxr.convert.exporter import ConvertOptions, convert_run

    run = tmp_path_factory.mktemp("bench") / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export", "bench"))
    # A one-epoch model's probabilities crowd around its threshold, so its int8 files rarely pass
    # verification: they are exported unverified (❎), then the fp32 files are exported verified (✅).
    convert_run(ConvertOptions(run=run, quantize="int8", format="tflite", calibration_size=16, verify=False))
    convert_run(ConvertOptions(run=run, quantize="none", format="all", verify_size=8))
    export = run / "export"
    images = [s.path for s in labelled_images(tiny_kaggle / "test")]
    reference = altered_tflite(run, export / ALTERED, images)
    (export / BROKEN).write_bytes(b"this is not an onnx model")
    broken_metadata = read_metadata(export / "model_fp32.onnx")
    write_metadata(export / BROKEN, broken_metadata)  # metadata matches: the runtime itself must refuse it
    report = json.loads((export / "verify.json").read_text())
    report["failures"].append({"name": MISSING, "format": "tflite", "quantization": "fp16",
                               "error": f"{MISSING}: conversion failed: injected by the test"})
    (export / "verify.json").write_text(json.dumps(report))
    config = BenchConfig(run=run, data=tiny_kaggle / "test", threads=[1], batch_sizes=[1, 4], warmup=1, repeats=3,
                         command="pytest")
    result = run_bench(config)
    threshold = read_metadata(run / "model.keras").threshold
    return {"run": run, "result": result, "reference": reference, "threshold": threshold, "n_images": len(images)}


def rows_of(result: dict, file: str) -> list[dict]:
    return [r for r in result["rows"] if r["file"] == file]


def test_bench_json_schema_and_outputs(bench_setup):
    out = bench_setup["run"] / "bench"
    on_disk = json.loads((out / JSON_FILE).read_text())
    assert on_disk["schema"] == "edgecxr.bench/1"
    assert MACHINE_FIELDS <= set(on_disk["machine"])
    assert on_disk["data"]["n_images"] == bench_setup["n_images"]
    assert on_disk["rows"], "no rows"
    for row in on_disk["rows"]:
        missing = REQUIRED_ROW_FIELDS - set(row)
        assert not missing, f"{row['name']} lacks {missing}"
    keras_rows = rows_of(on_disk, "model.keras")
    assert {r["format"] for r in keras_rows} == {"keras"}
    assert {r["mode"] for r in keras_rows} == {"predict", "call"}  # predict and the direct call, labelled apart
    assert {(r["threads"], r["batch_size"]) for r in keras_rows} == {(1, 1), (1, 4)}
    markdown = (out / MARKDOWN_FILE).read_text()
    for png in ("latency_vs_accuracy.png", "size_per_format.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for row in on_disk["rows"]:
        assert row["file"] in markdown


def test_every_artifact_appears_with_measurements(bench_setup):
    result = bench_setup["result"]
    export = bench_setup["run"] / "export"
    files = {r["file"] for r in result["rows"]}
    on_disk = {p.name for p in export.iterdir() if p.suffix in EDGE_SUFFIXES}
    assert {"model_fp32.tflite", "model_int8.tflite", "model_fp32.onnx"} <= on_disk
    assert on_disk | {"model.keras", MISSING} == files
    for row in result["rows"]:
        if row["status"] == "failed":
            continue
        assert row["latency_ms_p95"] >= row["latency_ms_p50"] > 0
        assert row["throughput_ips"] == pytest.approx(row["batch_size"] * 1000 / row["latency_ms_p50"])
        assert row["cold_start_s"] > 0 and row["peak_rss_mb"] > 10
        assert row["size_mb"] == pytest.approx((export.parent / "model.keras" if row["format"] == "keras"
                                                else export / row["file"]).stat().st_size / 2**20)
        assert row["n_images"] == bench_setup["n_images"]
    icons = {r["file"]: r["status_icon"] for r in result["rows"]}
    assert icons["model_fp32.tflite"] == icons["model_fp32.onnx"] == icons["model.keras"] == "✅"
    assert icons["model_int8.tflite"] == "❎"


def test_fidelity_is_measured_against_keras(bench_setup):
    result, threshold = bench_setup["result"], bench_setup["threshold"]
    keras_row = rows_of(result, "model.keras")[0]
    assert keras_row["agreement"] == 1.0 and keras_row["max_abs_diff"] == 0.0
    for file in ("model_fp32.tflite", "model_fp32.onnx"):
        row = rows_of(result, file)[0]
        assert row["agreement"] == 1.0
        assert row["max_abs_diff"] < 1e-4
        assert row["accuracy"] == keras_row["accuracy"]
    altered = rows_of(result, ALTERED)[0]
    reference_labels = bench_setup["reference"] >= threshold
    # Every altered prediction is the class Keras predicts least: agreement is that class's share.
    expected = min(np.mean(reference_labels), np.mean(~reference_labels))
    assert altered["agreement"] == pytest.approx(expected, abs=1.5 / bench_setup["n_images"])
    assert altered["agreement"] < 1.0
    assert altered["max_abs_diff"] > 0.3
    assert altered["status"] == "unverified" and "verify.json" in altered["reason"]


def test_failures_become_rows_with_reasons(bench_setup):
    result = bench_setup["result"]
    (broken,) = rows_of(result, BROKEN)
    assert broken["status"] == "failed" and broken["status_icon"] == "❌"
    assert "onnxruntime cannot load" in broken["reason"]
    assert broken["latency_ms_p50"] is None and broken["accuracy"] is None
    (missing,) = rows_of(result, MISSING)
    assert missing["status"] == "failed" and "injected by the test" in missing["reason"]
    assert missing["size_mb"] is None


def test_summary_compares_int8_tflite_with_keras_predict(bench_setup):
    (item,) = bench_setup["result"]["summary"]["int8_vs_keras"]
    keras = next(r for r in bench_setup["result"]["rows"]
                 if r["file"] == "model.keras" and r["mode"] == "predict" and r["batch_size"] == 1)
    int8 = next(r for r in bench_setup["result"]["rows"] if r["file"] == "model_int8.tflite" and r["batch_size"] == 1)
    assert item["latency_speedup"] == pytest.approx(keras["latency_ms_p50"] / int8["latency_ms_p50"])
    assert item["cold_start_speedup"] == pytest.approx(keras["cold_start_s"] / int8["cold_start_s"])
    assert item["memory_reduction"] == pytest.approx(keras["peak_rss_mb"] / int8["peak_rss_mb"])


def test_cli_repeat_gives_identical_accuracy(bench_setup, tiny_kaggle, tmp_path):
    """A second bench through the CLI (one format) reproduces the accuracy figures exactly."""
    out = tmp_path / "again"
    completed = subprocess.run(
        [*python_module("edgecxr.cli"), "bench", str(bench_setup["run"]), "--data", str(tiny_kaggle),
         "--formats", "tflite-int8", "--batch-sizes", "1", "--warmup", "1", "--repeats", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "model_int8.tflite vs Keras predict" in completed.stderr
    again = json.loads((out / JSON_FILE).read_text())
    assert {r["file"] for r in again["rows"]} == {"model.keras", "model_int8.tflite"}
    for file in ("model.keras", "model_int8.tflite"):
        first, second = rows_of(bench_setup["result"], file)[0], rows_of(again, file)[0]
        for key in ("accuracy", "sensitivity", "specificity", "f1", "roc_auc", "agreement", "max_abs_diff"):
            assert first[key] == second[key], (file, key)


def test_tflite_worker_never_imports_tensorflow(bench_setup, tiny_kaggle, tmp_path):
    images = tmp_path / "images.json"
    images.write_text(json.dumps({"paths": [str(p) for p in sorted((tiny_kaggle / "test" / "NORMAL").iterdir())[:2]]}))
    model = bench_setup["run"] / "export" / "model_int8.tflite"
    code = (
        "import sys; from edgecxr.benchmarks import worker; "
        f"code = worker.main(['--model', {str(model)!r}, '--images', {str(images)!r}, '--out', {str(tmp_path)!r}, "
        "'--warmup', '0', '--repeats', '1']); "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx') "
        "or m.startswith(('edgecxr.train', 'edgecxr.convert'))); print(heavy); sys.exit(code or bool(heavy))"
    )
    completed = subprocess.run([*ISOLATED_PYTHON, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr[-2000:]
    assert json.loads((tmp_path / "result.json").read_text())["ok"]


@pytest.mark.parametrize("args, message", [
    (["--device", "gpu"], "'gpu' is not one of 'cpu'"),
    (["--threads", "one"], "--threads"),
    (["--batch-sizes", "0"], "--batch-sizes"),
])
def test_cli_rejects_bad_options_in_one_line(tiny_run, tiny_kaggle, args, message):
    completed = subprocess.run([*python_module("edgecxr.cli"), "bench", str(tiny_run), "--data", str(tiny_kaggle),
                                *args], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert message in completed.stderr and "Traceback" not in completed.stderr


def test_cli_rejects_a_folder_that_is_not_a_run(tmp_path, tiny_kaggle):
    completed = subprocess.run([*python_module("edgecxr.cli"), "bench", str(tmp_path), "--data", str(tiny_kaggle)],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2 and "not a run folder" in completed.stderr


def test_unknown_device_lists_supported_ones():
    assert get_device("CPU").name == "cpu"
    with pytest.raises(EdgecxrError, match="supported: cpu"):
        get_device("coral")


def test_formats_filter_keeps_the_reference_and_rejects_unknown_names(tmp_path):
    candidates = [Candidate("model.keras", tmp_path / "model.keras", "keras", "none"),
                  Candidate("model_int8.tflite", tmp_path / "a", "tflite", "int8"),
                  Candidate("model_fp32.onnx", tmp_path / "b", "onnx", "none")]
    assert [c.name for c in select(candidates, ["tflite-int8"])] == ["model.keras", "model_int8.tflite"]
    assert [c.name for c in select(candidates, ["onnx"])] == ["model.keras", "model_fp32.onnx"]
    with pytest.raises(EdgecxrError, match="not in this run"):
        select(candidates, ["tflite-fp16"])


def test_timing_summary_and_strict_json():
    summary = timing_summary([0.010, 0.020, 0.030], batch_size=4)
    assert summary["latency_ms_p50"] == pytest.approx(20.0)
    assert summary["throughput_ips"] == pytest.approx(200.0)
    assert summary["latency_ms_per_image"] == pytest.approx(5.0)
    assert json_safe({"a": [float("nan"), 1.0, float("inf")]}) == {"a": [None, 1.0, None]}


@pytest.mark.slow
def test_bench_runs_from_the_repository_root_against_a_regular_install(bench_setup, tiny_kaggle, tmp_path):
    """`python -m` puts the working directory first on sys.path: from the repository root the source tree's
    edgecxr/ (cli.py alone; package-dir maps the rest) shadowed a regular install, and every worker of
    `edgecxr bench` failed to import edgecxr.benchmarks. A virtualenv holds a regular (non-editable) wheel
    of this checkout; its third-party packages come from this interpreter's site-packages, added as a plain
    path so that the editable install's own .pth hook there is not run."""
    import site
    import sysconfig

    wheels = tmp_path / "wheel"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "-w", str(wheels), str(REPO)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (wheel,) = wheels.glob("edgecxr-*.whl")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--no-index", "--quiet", str(wheel)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-2000:]
    # Every site-packages this interpreter sees (a .pth may have added some), after the new venv's own.
    shared = [p for p in dict.fromkeys([sysconfig.get_paths()["purelib"], *site.getsitepackages(), *sys.path])
              if "site-packages" in p and Path(p).is_dir()]
    (Path(purelib) / "shared_packages.pth").write_text("".join(f"{p}\n" for p in shared))
    where = subprocess.run([python, "-c", "import edgecxr.benchmarks, sys; print(edgecxr.benchmarks.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert where.returncode == 0 and where.stdout.startswith(str(venv)), where.stdout + where.stderr

    out = tmp_path / "bench"
    done = subprocess.run([venv / "bin" / "edgecxr", "bench", str(bench_setup["run"]), "--data", str(tiny_kaggle),
                           "--formats", "tflite-int8", "--batch-sizes", "1", "--warmup", "1", "--repeats", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((out / JSON_FILE).read_text())["rows"]
    assert {r["file"] for r in rows} == {"model.keras", "model_int8.tflite"}
    # The int8 file was exported unverified (bench_setup says why); every row was measured by its worker.
    assert all(r["status"] in ("ok", "unverified") and r["latency_ms_p50"] for r in rows), \
        [(r["file"], r["status"], r["reason"]) for r in rows]
