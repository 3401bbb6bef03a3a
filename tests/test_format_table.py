"""The format table is the one place a format is named: every row has a builder and a backend, and
the exporter, doctor and bundle read it instead of naming formats themselves."""

from __future__ import annotations

import ast
from pathlib import Path

from edgecxr.convert.builders import BUILDERS
from edgecxr.edge_runtime.backends import BACKENDS, backend_class
from edgecxr.edge_runtime.doctor import RUNTIMES
from edgecxr.edge_runtime.formats import EXPORT_FORMATS, FORMAT_NAMES

ROOT = Path(__file__).resolve().parents[1]


def test_every_format_of_the_table_has_a_builder_and_a_backend():
    assert set(BUILDERS) == set(FORMAT_NAMES)
    assert set(BACKENDS) == set(FORMAT_NAMES)
    for row in EXPORT_FORMATS:
        assert backend_class(row.filename) is BACKENDS[row.format]
    assert backend_class("model.keras") is None


def test_doctor_lists_every_runtime_package_of_the_table():
    listed = [(package, runs) for package, _, runs in RUNTIMES]
    assert len(listed) == len(set(listed))  # each package once per suffix, however many rows share it
    listed = set(listed)
    wanted = {(package, row.suffix) for row in EXPORT_FORMATS for package, _ in row.runtime.packages}
    assert listed == wanted


def string_constants(path: Path) -> list[str]:
    return [node.value for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_exporter_doctor_and_bundle_name_no_format():
    """A format name written in one of these files would be a branch the table does not drive."""
    for relative in ("convert/exporter.py", "edge_runtime/doctor.py", "edge_runtime/bundle.py"):
        named = [s for s in string_constants(ROOT / relative) if s.strip(".") in FORMAT_NAMES]
        assert named == [], f"{relative} names formats {named}"
