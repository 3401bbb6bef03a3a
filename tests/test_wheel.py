"""The wheel holds the product only: no study, no test, no result file."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_has_the_five_packages_and_no_study(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(REPO)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("edgecxr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {n.split("/")[1] for n in names if n.startswith("edgecxr/") and n.count("/") >= 2}
    assert packages == {"train", "convert", "edge_runtime", "benchmarks"}
    assert not [n for n in names if n.startswith(("research/", "tests/")) or "/results/" in n]
    assert "edgecxr/cli.py" in names and "edgecxr/edge_runtime/formats.py" in names
    # The station's page works offline only if its assets travel in the wheel.
    static = {n.rsplit("/", 1)[1] for n in names if n.startswith("edgecxr/edge_runtime/station/static/")}
    assert static == {"index.html", "app.js", "style.css"}
