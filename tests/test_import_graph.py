"""The package import graph runs one way, read from the source (lazy imports inside functions too):

    edge_runtime <- train <- convert <- benchmarks <- edgecxr (the CLI)

A package may import itself and the packages to its left, never one to its right; edge_runtime
(what goes to the Pi) imports no TensorFlow, Keras or converter; no product code imports research/.
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


def imported_modules(path: Path, package: str) -> list[str]:
    """Absolute names of every module `path` imports, relative imports resolved against `package`."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . / from .x inside edgecxr.<package>
                base = "edgecxr" if package == "edgecxr" else f"edgecxr.{package}"
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
            found += [(str(path.relative_to(REPO)), package, module) for module in imported_modules(path, package)]
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


@pytest.mark.parametrize("source, package, expected", [
    ("from edgecxr.convert.plan import x\n", "train", ["edgecxr.convert.plan"]),
    ("def f():\n    from .exporter import y\n", "convert", ["edgecxr.convert.exporter"]),
    ("import keras\n", "edge_runtime", ["keras"]),
])
def test_the_reader_sees_lazy_and_relative_imports(tmp_path, source, package, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert imported_modules(path, package) == expected
