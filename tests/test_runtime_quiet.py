"""The inference runtimes' own log lines never reach the user: only edgecxr's messages do.

LiteRT's C++ code prints `INFO: Created TensorFlow Lite XNNPACK delegate for CPU.` straight to file
descriptor 2 when an interpreter first allocates its tensors; `edgecxr predict` must not show it.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from edge_artifacts import edge_artifacts
from edgecxr.edge_runtime.python_command import ISOLATED_PYTHON

REPO = Path(__file__).resolve().parents[1]
RUNTIME_LINE = re.compile(r"^(INFO|WARNING|VERBOSE): |\[[VIWEF]:onnxruntime:")


def python(code: str, *args) -> subprocess.CompletedProcess:
    # No TF_CPP_MIN_LOG_LEVEL (the suite sets one): a user's shell has none.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([*ISOLATED_PYTHON, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


def runtime_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if RUNTIME_LINE.search(line)]


@pytest.mark.parametrize("artifact", ["int8.tflite", "fp32.tflite", "int8.onnx"])
@pytest.mark.parametrize("mode", ["table", "--json"])
def test_predict_prints_no_runtime_log_line(tiny_run, tiny_kaggle, artifact, mode):
    model = edge_artifacts(tiny_run)[artifact]
    images = sorted((tiny_kaggle / "test" / "PNEUMONIA").iterdir())[:3]
    # --batch-size 2 over 3 images: the last batch resizes the interpreter and allocates again.
    args = ["predict", model, *images, "--batch-size", "2", *([mode] if mode != "table" else [])]
    result = python("import sys; sys.argv[0] = 'edgecxr'; from edgecxr.cli import main; main()", *args)
    assert result.returncode == 0, result.stderr
    assert "3 predicted" in result.stderr  # edgecxr's own summary still shows
    assert runtime_lines(result) == [], result.stdout + result.stderr


def test_silencing_drops_native_log_lines_and_keeps_everything_else():
    code = """
import os, sys, warnings
from edgecxr.edge_runtime.native_logs import runtime_logs_silenced
print("before", file=sys.stderr, flush=True)
with runtime_logs_silenced():
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
    os.write(2, b"2025-01-01 10:00:00.000 [W:onnxruntime:Default, x.cc:1 f] chatter\\n")
    with runtime_logs_silenced():  # nested: the outer block still holds the redirection
        os.write(2, b"WARNING: native warning\\n")
    print("python-level text", file=sys.stderr)
    warnings.warn("a Python warning")
try:
    with runtime_logs_silenced():
        raise ValueError("the error itself")
except ValueError as exc:
    print(f"caught: {exc}", file=sys.stderr)
print("after", file=sys.stderr, flush=True)
os.write(2, b"INFO: a native line outside any block is not ours to hide\\n")
"""
    result = python(code)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "before" in lines and "python-level text" in lines and "after" in lines
    assert "caught: the error itself" in lines
    assert any("UserWarning: a Python warning" in line for line in lines)
    assert not any("XNNPACK" in line or "onnxruntime" in line or "native warning" in line for line in lines), lines
    assert lines[-1].startswith("INFO: a native line outside")  # fd 2 is restored afterwards
