"""How the product starts one of its own modules in a child Python process.

`python -m pkg.mod` puts the working directory first on sys.path. Run from a checkout, the
source tree's `edgecxr/` (which holds only cli.py: the other packages are mapped there by
setuptools' package-dir) then shadows the installed package, and the child fails to import
`edgecxr.benchmarks` or imports stale code. `-P` (Python 3.11+) leaves the working directory out;
`-I` does the same on 3.10, also ignoring PYTHON* variables and the user site.
"""

from __future__ import annotations

import sys


def python_module(module: str, python: str | None = None) -> list[str]:
    """The argv prefix that runs `module` with `python` (default: this interpreter), unshadowed."""
    python = python or sys.executable
    isolate = "-P" if sys.version_info >= (3, 11) else "-I"
    return [python, isolate, "-m", module]


# This interpreter, unshadowed: `[*ISOLATED_PYTHON, "-c", code]`.
ISOLATED_PYTHON = (sys.executable, "-P" if sys.version_info >= (3, 11) else "-I")
