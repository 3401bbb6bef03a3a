"""The site-safety benchmark's parts: its non-X-ray catalogue, and its cached decisions, which must be
the Predictor's own."""

from __future__ import annotations

import numpy as np
import pytest

from edge_artifacts import gated_artifacts
from edgecxr.benchmarks.measure.non_xrays import catalogue
from edgecxr.benchmarks.measure.site_safety import check_against_predictor, judge, observe, shift_rate
from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.images import open_image
from edgecxr.edge_runtime.gate import check_image
from edgecxr.edge_runtime.predictor import Predictor


@pytest.fixture(scope="module")
def items(xray_pool):
    pytest.importorskip("skimage")
    films = sorted((xray_pool / "held_out").iterdir())
    built, notes = catalogue(films, transformed=6, seed=0)
    return built, notes, films


def test_the_catalogue_is_seeded_decodable_and_complete(items):
    built, notes, films = items
    again, _ = catalogue(films, transformed=6, seed=0)
    assert [i.data for i in again] == [i.data for i in built]
    categories = {i.category for i in built}
    assert {"photograph, colour", "colour photograph in gray", "crop of a photograph, gray", "blank",
            "noise, 8-bit", "noise, 16-bit", "text", "inverted X-ray", "X-ray rotated 90°"} <= categories
    assert sum(i.category == "inverted X-ray" for i in built) == 6
    for item in built:
        open_image(item.data)  # raises for an unreadable one
    # These need no model at all: the cheap checks refuse every one.
    for item in built:
        if item.category in ("blank", "noise, 16-bit", "text", "photograph, colour"):
            assert check_image(open_image(item.data)) is not None, item.name
    try:
        import sklearn  # noqa: F401
    except ImportError:
        assert any("scikit-learn" in note for note in notes)


def test_cached_decisions_equal_the_predictors(tiny_run, xray_pool, items):
    built, _, films = items
    model = gated_artifacts(tiny_run, xray_pool)["int8.tflite"]
    predictor = Predictor.open(model)
    sources = [i.data for i in built] + films
    observed = observe(predictor.backend, predictor.spec, sources, [str(k) for k in range(len(sources))])
    judged = judge(observed, predictor.reference)
    check_against_predictor(model, sources, judged)  # raises if a single decision differs
    assert judged.refused[:len(built)].mean() > 0.8 and judged.refused[len(built):].mean() < 0.1
    judged.refused[0] = not judged.refused[0]
    with pytest.raises(EdgecxrError, match="differ from the Predictor's on 1 image"):
        check_against_predictor(model, sources, judged)
    films_only = np.arange(len(built), len(sources))
    rate = shift_rate(judge(observed, predictor.reference), predictor.reference, films_only, 20, 10,
                      np.random.default_rng(0))
    assert 0.0 <= rate <= 1.0
    # By patient: the films' names give the patients; unchanged films of the training population.
    paths = [None] * len(built) + films
    by_patient = shift_rate(judge(observed, predictor.reference), predictor.reference, films_only, 20, 10,
                            np.random.default_rng(0), paths)
    assert 0.0 <= by_patient <= 0.3
    with pytest.raises(ValueError, match="fewer than a batch"):
        shift_rate(judge(observed, predictor.reference), predictor.reference, films_only, len(films) + 1, 1,
                   np.random.default_rng(0), paths)
