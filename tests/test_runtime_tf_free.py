"""The edge runtime runs where TensorFlow and Keras cannot even be imported, and starts lean."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest

from edge_artifacts import edge_artifacts
from edgecxr.edge_runtime.python_command import ISOLATED_PYTHON

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("tensorflow", "keras", "tf_keras", "tf2onnx", "onnx", "edgecxr.train", "edgecxr.convert")
# None in sys.modules makes `import x` raise ImportError and find_spec(x) return None: as if not installed.
BLOCK = f"import sys; sys.modules.update(dict.fromkeys({list(FORBIDDEN[:5])!r}));"


def python(code: str, *args, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([*ISOLATED_PYTHON, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def cli(*args) -> subprocess.CompletedProcess:
    return python(BLOCK + "from edgecxr.cli import main; main()", *args)


def test_blocking_works():
    result = python(BLOCK + "import tensorflow")
    assert result.returncode != 0 and "import of tensorflow halted" in result.stderr


@pytest.mark.parametrize("artifact", ["int8.tflite", "int8.onnx"])
def test_predict_without_tensorflow_or_keras(tiny_run, tiny_kaggle, artifact):
    model = edge_artifacts(tiny_run)[artifact]
    result = cli("predict", model, tiny_kaggle / "test", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 24 and all(r["label"] in ("NORMAL", "PNEUMONIA") for r in rows)
    assert "accuracy" in result.stderr


def test_train_without_tensorflow_names_the_extra(tiny_kaggle):
    result = cli("train", "--data", tiny_kaggle, "--out", tiny_kaggle.parent / "never")
    assert result.returncode == 2
    assert "pip install 'edgecxr[train]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_commission_without_tensorflow_and_renormalise_names_the_extra(tiny_run, tiny_kaggle, tmp_path):
    model = edge_artifacts(tiny_run)["int8.tflite"]
    out = tmp_path / "site.tflite"
    result = cli("commission", model, tiny_kaggle / "test", "--site", "tf-free", "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.is_file() and "commissioned model written" in result.stderr

    refused = tmp_path / "renormalised.tflite"
    result = cli("commission", model, tiny_kaggle / "test", "--renormalise", tiny_run, "--out", refused)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'edgecxr commission --renormalise' needs" in " ".join(result.stderr.split())
    assert "pip install 'edgecxr[train]'" in result.stderr
    assert not refused.exists() and not list(tmp_path.glob(".edgecxr-renormalise-*"))


def test_predictor_imports_nothing_forbidden(tiny_run, tiny_kaggle):
    """The predictor's whole import graph, checked after a real prediction (train/convert blocked too)."""
    model = edge_artifacts(tiny_run)["int8.tflite"]
    image = sorted((tiny_kaggle / "test" / "NORMAL").iterdir())[0]
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({list(FORBIDDEN)!r}));"
        "from edgecxr.edge_runtime.predictor import Predictor;"
        "p = Predictor.open(sys.argv[1]).predict(sys.argv[2]);"
        "assert p.label in ('NORMAL', 'PNEUMONIA');"
        "loaded = [m for m in sys.modules if sys.modules[m] is not None and "
        "m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx', 'onnx', 'onnxruntime', 'rich', 'typer')];"
        "print(','.join(loaded))"
    )
    result = python(code, model, image)
    assert result.returncode == 0, result.stderr
    # A .tflite prediction needs neither onnxruntime nor the CLI libraries.
    assert result.stdout.strip() == ""


def test_cli_start_up_imports_no_numeric_or_inference_library():
    code = ("import sys; import edgecxr.cli;"
            "print(','.join(m for m in ('numpy', 'PIL', 'onnxruntime', 'ai_edge_litert', 'tflite_runtime', "
            "'tensorflow', 'keras') if m in sys.modules))")
    result = python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_predict_does_not_import_pydantic(tiny_run, tiny_kaggle):
    """typer 0.29 imports pydantic to parse every command's options: 0.13 CPU s of each `predict`'s
    0.44 s start-up on a 2-core Xeon, about four times that on a Pi (docs/results/predict-cpu.md).
    pyproject.toml holds typer below 0.29 for that; this fails if a typer or anything else on the
    command's path brings pydantic back."""
    model = edge_artifacts(tiny_run)["int8.tflite"]
    code = (BLOCK + "import atexit, os, sys;"
            "atexit.register(lambda: os.write(2, b'pydantic loaded: %d' % ('pydantic' in sys.modules)));"
            "from edgecxr.cli import main; main()")
    result = python(code, "predict", model, tiny_kaggle / "test", "--json")
    assert result.returncode == 0, result.stderr
    assert "pydantic loaded: 0" in result.stderr, result.stderr[-300:]


def imported_modules(path: Path) -> set[str]:
    """Absolute names of everything a source file imports, with relative imports resolved."""
    package = "edgecxr.edge_runtime"
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.add(f"{base}.{node.module}" if node.module else base)
            else:
                names.add(node.module)
    return names


def test_edge_runtime_sources_never_import_tensorflow_keras_train_or_convert():
    offenders = {}
    for path in sorted((REPO / "edge_runtime").glob("*.py")):
        bad = {name for name in imported_modules(path)
               if any(name == f or name.startswith(f + ".") for f in FORBIDDEN) or name.startswith("edgecxr.benchmarks")}
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}
