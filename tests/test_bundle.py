"""`edgecxr bundle`: the offline install archive for a clinic machine.

The requirement, refusal and manifest tests run everywhere (no network). Building a real bundle
downloads the target's wheels from PyPI, so that test runs with EDGECXR_EDGE_ENV=1 (`make
edge-check`): it builds an x86_64 bundle of the tiny run's models, installs it into a fresh
virtualenv with no network (inside `unshare -n` where the machine allows) and predicts with it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tarfile
from importlib import metadata as importlib_metadata
from pathlib import Path

import pytest

from edgecxr.edge_runtime import bundle, bundle_files
from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.python_command import ISOLATED_PYTHON

REPO = Path(__file__).resolve().parents[1]


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    code = "import sys; sys.argv[0] = 'edgecxr'; from edgecxr.cli import main; main()"
    return subprocess.run([*ISOLATED_PYTHON, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=900, **kwargs)


def test_the_edge_requirements_come_from_the_package_metadata():
    aarch64 = bundle.target_environment("aarch64", (3, 11))
    requirements, extras = bundle.edge_requirements(aarch64)
    names = [r.split(">")[0].split("=")[0].split("<")[0].split(";")[0] for r in requirements]
    assert {"numpy", "pillow", "typer", "rich", "ai-edge-litert", "onnxruntime"} <= set(names)
    assert not {"tensorflow", "tensorflow-cpu", "keras", "torch", "pytest", "pydicom-data"} & set(names)
    assert {"pydicom", "starlette", "uvicorn"} <= set(names), "the station and DICOM extras are edge extras"
    assert "edgecxr" not in names, "edgecxr is the bundle's own wheel, not a download"
    assert all(";" not in r for r in requirements), "markers are evaluated for the target, not shipped"
    declared = set(importlib_metadata.metadata("edgecxr").get_all("Provides-Extra") or [])
    assert set(extras) == declared - bundle.BUILD_MACHINE_EXTRAS
    # LiteRT's marker names the machines it has wheels for: none for 32-bit ARM.
    armv7l, _ = bundle.edge_requirements(bundle.target_environment("armv7l", (3, 11)))
    assert not [r for r in armv7l if r.startswith("ai-edge-litert")]


def test_tflite_runtime_takes_litert_s_place_with_numpy_1():
    requirements, _ = bundle.edge_requirements(bundle.target_environment("aarch64", (3, 11)))
    legacy = bundle.with_tflite_runtime(requirements, "tflite-runtime")
    assert not [r for r in legacy if r.startswith("ai-edge-litert")]
    assert "tflite-runtime==2.14.*" in legacy and "numpy<2" in legacy
    with pytest.raises(EdgecxrError, match="unknown TFLite runtime"):
        bundle.with_tflite_runtime(requirements, "tensorflow")


def test_platform_tags_cover_bookworm_glibc():
    tags = bundle.platform_tags("aarch64")
    assert "manylinux_2_36_aarch64" in tags and "manylinux_2_17_aarch64" in tags
    assert "manylinux_2_37_aarch64" not in tags


@pytest.mark.parametrize("args, message", [
    (["--platform", "armv7l"], "armv7l) is not offered: LiteRT and onnxruntime publish no armv7l wheels"),
    (["--platform", "riscv64"], "unsupported platform 'riscv64'"),
    (["--python", "3"], "--python must look like 3.11"),
])
def test_bad_targets_are_one_line_and_exit_2(tmp_path, args, message):
    model = tmp_path / "model_int8.tflite"
    model.write_bytes(b"not used")
    result = cli("bundle", model, *args, "--out", tmp_path / "out")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_missing_model_is_one_line(tmp_path):
    result = cli("bundle", tmp_path / "nothing.tflite", "--out", tmp_path)
    assert result.returncode == 2 and "model or run folder not found" in result.stdout + result.stderr
    result = cli("bundle", tmp_path, "--out", tmp_path)  # a folder with no export in it
    assert result.returncode == 2 and "has no model_int8.tflite" in result.stdout + result.stderr


def fake_bundle_folder(root: Path, python: str) -> Path:
    """A bundle folder's text files and manifest around a small model file (no wheels)."""
    (root / "models").mkdir(parents=True)
    (root / "models" / "model_int8.tflite").write_bytes(bytes(range(256)) * 4)
    info = {"edgecxr": "0.1.0", "platform": platform.machine(), "python": python, "models": ["model_int8.tflite"]}
    bundle_files.write_files(root, info)
    bundle.write_manifest(root)
    return root


def run_install(folder: Path, prefix: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(folder / "install.sh"), "--prefix", str(prefix), "--no-service"],
                          capture_output=True, text=True, timeout=900)


def test_install_sh_refuses_a_bundle_with_a_changed_file(tmp_path):
    # A Python version no machine has: an intact bundle passes the manifest check and stops at step 2.
    folder = fake_bundle_folder(tmp_path / "bundle", python="2.1")
    intact = run_install(folder, tmp_path / "prefix")
    assert intact.returncode == 1
    assert "this bundle is for Python 2.1" in intact.stderr and "damaged" not in intact.stderr

    model = folder / "models" / "model_int8.tflite"
    data = bytearray(model.read_bytes())
    data[100] ^= 1
    model.write_bytes(bytes(data))
    changed = run_install(folder, tmp_path / "prefix")
    assert changed.returncode == 1
    assert "a file of this bundle is damaged or was changed" in changed.stderr
    assert "checking this machine" not in changed.stdout and not (tmp_path / "prefix").exists()


def no_network_prefix() -> list[str]:
    """`unshare -n` where this machine lets us drop the network (root), else nothing: install.sh
    passes --no-index to pip either way."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n"]
    return []


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("EDGECXR_EDGE_ENV") != "1",
                    reason="downloads the target's wheels from PyPI: run with EDGECXR_EDGE_ENV=1 (make edge-check)")
def test_a_bundle_installs_with_no_network_and_predicts(tiny_run, tiny_kaggle, tmp_path):
    from edgecxr.convert.exporter import ConvertOptions, convert_run
    from edgecxr.train.evaluate import evaluate

    # The run scored on another labelled folder first, so its artifacts carry that site's figures too.
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    evaluate(run, tiny_kaggle / "test")
    export = tmp_path / "export"
    results = convert_run(ConvertOptions(run=run, quantize="int8", format="all", out=export, calibration_size=32,
                                         verify=False))
    assert {r.name for r in results if r.status == "unverified"} >= {"model_int8.tflite", "model_fp32.onnx"}
    machine = platform.machine()
    built = cli("bundle", export, "--platform", machine, "--formats", "tflite-int8,onnx-fp32", "--out", tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    (archive,) = tmp_path.glob("edgecxr-*.tar.gz")
    assert not list(tmp_path.glob(".edgecxr-bundle-*")), "the staging folder is removed"
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    (folder,) = (tmp_path / "unpacked").iterdir()
    info = json.loads((folder / "bundle.json").read_text())
    assert info["platform"] == machine and info["models"] == ["model_int8.tflite", "model_fp32.onnx"]
    assert any(w.startswith("edgecxr-") for w in info["wheels"])
    listed = {line.split("  ", 1)[1] for line in (folder / "MANIFEST.sha256").read_text().splitlines()}
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"MANIFEST.sha256"}
    assert listed == on_disk

    prefix = tmp_path / "installed"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    install = subprocess.run([*no_network_prefix(), "sh", str(folder / "install.sh"), "--prefix", str(prefix)],
                             capture_output=True, text=True, timeout=900, env=env)
    assert install.returncode == 0, install.stdout + install.stderr
    assert "no 'serve' command" in install.stdout or "service" in install.stdout
    no_tf = subprocess.run([prefix / "venv" / "bin" / "python", "-c", "import tensorflow"], capture_output=True)
    assert no_tf.returncode != 0, "the bundle must not install TensorFlow"
    for model in info["models"]:
        result = subprocess.run([*no_network_prefix(), prefix / "venv" / "bin" / "edgecxr", "predict",
                                 prefix / "models" / model, tiny_kaggle / "test", "--json"],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(rows) == 24 and all(row["label"] for row in rows)
        # The card travels sealed in the metadata: far from the run folder it still shows the validated
        # figures and the other site's, as on the build machine.
        doctor = subprocess.run([*no_network_prefix(), prefix / "venv" / "bin" / "edgecxr", "doctor",
                                 prefix / "models" / model], capture_output=True, text=True, timeout=300)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        printed = " ".join((doctor.stdout + doctor.stderr).split())  # the report goes to stderr
        assert "validated: sensitivity" in printed and f"at another site ({tiny_kaggle.name}/test): sensitivity" in printed, printed
        assert "threshold rule: highest threshold with validation sensitivity" in printed
