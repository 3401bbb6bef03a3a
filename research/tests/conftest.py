"""The study tests use the product suite's fixtures (real data folder, tiny Kaggle copy, tiny
trained run, per-session pixel cache) and its `edge_artifacts` helper, imported from tests/ rather
than copied, so `pytest research/tests` from the repo root trains the same tiny run.

tests/conftest.py is loaded under a name of its own: as `conftest` it would collide with pytest's
own conftest modules, and as `tests.conftest` with the top-level `tests` package tf2onnx installs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PRODUCT_TESTS = Path(__file__).resolve().parents[2] / "tests"
# The product tests import their helpers (edge_artifacts) as top-level modules from tests/.
if str(PRODUCT_TESTS) not in sys.path:
    sys.path.insert(0, str(PRODUCT_TESTS))


def _product_conftest():
    name = "edgecxr_product_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, PRODUCT_TESTS / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_product = _product_conftest()
# Fixtures are found by name in this module; _isolated_cache is autouse (keeps ~/.cache clean).
data_root = _product.data_root
tiny_kaggle = _product.tiny_kaggle
tiny_run = _product.tiny_run
_isolated_cache = _product._isolated_cache
