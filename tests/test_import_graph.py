"""The package import graph runs one way, read from the source (lazy imports inside functions too):

    edge_runtime <- train <- convert <- benchmarks <- edgecxr (the CLI)

A package may import itself and the packages to its left, never one to its right; edge_runtime
(what goes to the Pi) imports no TensorFlow, Keras or converter; no product code imports research/.
Inside benchmarks/, the `bench` command's modules never import the one-off measurements
(benchmarks/measure/), which may use the bench's own helpers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ORDER = ["edge_runtime", "train", "convert", "benchmarks", "edgecxr"]
FOLDERS = {"edge_runtime": "edge_runtime", "train": "train", "convert": "convert", "benchmarks": "benchmarks",
           "edgecxr": "edgecxr"}
HEAVY = {"tensorflow", "keras", "tf2onnx", "onnx", "torch", "matplotlib"}


def imported_modules(path: Path, package: str, subpackage: tuple[str, ...] = ()) -> list[str]:
    """Absolute names of every module `path` imports, relative imports resolved against `package`
    (and the `subpackage` folders below it that hold the file)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . / from ..x inside edgecxr.<package>.<subpackage>
                here = ["edgecxr"] + ([] if package == "edgecxr" else [package]) + list(subpackage)
                base = ".".join(here[:len(here) - node.level + 1])
                names.append(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.append(node.module)
    return names


def package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "edgecxr":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in ORDER else "edgecxr"


def edges() -> list[tuple[str, str, str]]:
    """(importing file, importing package, imported module) for every import in the product."""
    found = []
    for package, folder in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            subpackage = path.parent.relative_to(REPO / folder).parts
            found += [(str(path.relative_to(REPO)), package, module)
                      for module in imported_modules(path, package, subpackage)]
    return found


def test_packages_import_only_to_their_left():
    wrong = [f"{file} imports {module}" for file, package, module in edges()
             if (target := package_of(module)) is not None and ORDER.index(target) > ORDER.index(package)]
    assert not wrong, "\n".join(wrong)


def test_the_edge_runtime_imports_nothing_heavy_and_no_product_code_imports_research():
    heavy = [f"{file} imports {module}" for file, package, module in edges()
             if package == "edge_runtime" and module.split(".")[0] in HEAVY]
    research = [f"{file} imports {module}" for file, _, module in edges() if module.split(".")[0] == "research"]
    assert not heavy + research, "\n".join(heavy + research)


def test_the_bench_command_imports_no_measurement_and_nothing_imports_tools():
    wrong = [f"{file} imports {module}" for file, package, module in edges()
             if (package == "benchmarks" and "/measure/" not in file and module.startswith("edgecxr.benchmarks.measure"))
             or module.split(".")[0] == "tools"]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("source, package, subpackage, expected", [
    ("from edgecxr.convert.plan import x\n", "train", (), ["edgecxr.convert.plan"]),
    ("def f():\n    from .exporter import y\n", "convert", (), ["edgecxr.convert.exporter"]),
    ("import keras\n", "edge_runtime", (), ["keras"]),
    ("from ..machine import z\n", "benchmarks", ("measure",), ["edgecxr.benchmarks.machine"]),
    ("from .site_draws import z\n", "benchmarks", ("measure",), ["edgecxr.benchmarks.measure.site_draws"]),
])
def test_the_reader_sees_lazy_and_relative_imports(tmp_path, source, package, subpackage, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert imported_modules(path, package, subpackage) == expected
