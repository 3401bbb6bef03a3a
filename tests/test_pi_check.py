"""pi-check's verdict (tools/agreement.py) on real predictions: the tiny run's int8 TFLite and
fp32 ONNX models over real test/ images, written by `edgecxr predict --json`. The same predictions
agree; one probability moved past the tolerance, one label flipped or one image lost makes it fail.
(The emulated arm64 run itself is `make pi-check`, which needs root and about ten minutes.)"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_artifacts import edge_artifacts
from edgecxr.edge_runtime.python_command import ISOLATED_PYTHON

pytestmark = pytest.mark.slow

# A CI check, not part of the package: loaded from tools/ as the scripts run it.
_SPEC = importlib.util.spec_from_file_location("agreement", Path(__file__).resolve().parents[1] / "tools" / "agreement.py")
pi_check = sys.modules["agreement"] = importlib.util.module_from_spec(_SPEC)  # dataclasses look it up there
_SPEC.loader.exec_module(pi_check)


def predictions(model: Path, folder: Path, out: Path) -> Path:
    code = "import sys; sys.argv[0] = 'edgecxr'; from edgecxr.cli import main; main()"
    result = subprocess.run([*ISOLATED_PYTHON, "-c", code, "predict", str(model), str(folder), "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out.write_text(result.stdout)
    return out


def altered(source: Path, target: Path, change) -> Path:
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    change(rows)
    target.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return target


@pytest.fixture(scope="module")
def cases(tiny_run, tiny_kaggle, tmp_path_factory):
    out = tmp_path_factory.mktemp("pi_check")
    models = edge_artifacts(tiny_run)
    return {key: (models[key], predictions(models[key], tiny_kaggle / "test", out / f"{key}.jsonl"))
            for key in ("int8.tflite", "fp32.onnx")}


def run(capsys, *pairs) -> tuple[int, str]:
    argv = [str(word) for pair in pairs for word in pair]
    code = pi_check.main(argv)
    return code, capsys.readouterr().out


def test_the_same_predictions_agree(cases, capsys):
    (tflite, tflite_rows), (onnx, onnx_rows) = cases["int8.tflite"], cases["fp32.onnx"]
    code, out = run(capsys, ("tflite", tflite, tflite_rows, tflite_rows), ("onnx", onnx, onnx_rows, onnx_rows))
    assert code == 0, out
    assert "| tflite | 24 | 24/24 | 0.00e+00 |" in out and "DIFFERENT" not in out
    step = pi_check.tolerance_for(tflite)
    assert 0 < step < 0.01 and pi_check.tolerance_for(onnx) == pi_check.FP32_TOLERANCE


def test_a_probability_one_step_off_passes_and_two_steps_off_fails(cases, capsys, tmp_path):
    model, rows = cases["int8.tflite"]
    step = pi_check.tolerance_for(model)

    def nudge(by):
        def change(items):
            # The image furthest from the threshold: its label cannot change with the nudge.
            row = max(items, key=lambda r: abs(r["probability"] - r["threshold"]))
            row["probability"] += by if row["probability"] < 0.5 else -by
        return change

    code, out = run(capsys, ("tflite", model, altered(rows, tmp_path / "one.jsonl", nudge(step)), rows))
    assert code == 0, out
    code, out = run(capsys, ("tflite", model, altered(rows, tmp_path / "two.jsonl", nudge(2 * step)), rows))
    assert code == 1 and "DIFFERENT" in out and "|dp|" in out, out


def test_fp32_is_held_to_1e_4(cases, capsys, tmp_path):
    model, rows = cases["fp32.onnx"]

    def change(items):
        items[0]["probability"] += 3e-4 if items[0]["probability"] < 0.5 else -3e-4

    code, out = run(capsys, ("onnx", model, altered(rows, tmp_path / "fp32.jsonl", change), rows))
    assert code == 1 and "> 0.0001" in out, out


def test_a_flipped_label_or_a_lost_image_fails(cases, capsys, tmp_path):
    model, rows = cases["int8.tflite"]

    def flip(items):
        items[3]["label"] = "NORMAL" if items[3]["label"] != "NORMAL" else "PNEUMONIA"

    code, out = run(capsys, ("tflite", model, altered(rows, tmp_path / "flip.jsonl", flip), rows))
    assert code == 1 and "23/24" in out and "x86" in out, out
    code, out = run(capsys, ("tflite", model, rows, altered(rows, tmp_path / "lost.jsonl", lambda items: items.pop())))
    assert code == 1 and "missing on arm64" in out, out
