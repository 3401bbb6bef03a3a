"""The Lite0-student rule applied as written (research/lite0_student_rule.md): it passes, and each
check fails on its own; the training cost is read from real `/usr/bin/time -v` output."""

import subprocess
import sys

import pytest

from research.lite0_student import decide, time_v

VALIDATION = {"B": {"roc_auc": 0.9987, "accuracy": 0.959}, "L": {"roc_auc": 0.9985, "accuracy": 0.955},
              "S2": {"roc_auc": 0.9980, "accuracy": 0.965}}
STRESS = {"B": 0.9922, "L": 0.9950, "S2": 0.9942}


def _decide(validation=VALIDATION, stress=STRESS, verified=True, size=3.9, seconds=1500, gb=5.0):
    return decide(validation, stress, verified, size, seconds, gb, "B", "L", "S2")["qualifies"]


def test_the_rule_passes_and_each_check_can_fail():
    assert _decide()
    assert not _decide(validation={**VALIDATION, "L": {"roc_auc": 0.9975, "accuracy": 0.955}})  # AUC - 0.0012
    assert not _decide(validation={**VALIDATION, "L": {"roc_auc": 0.9985, "accuracy": 0.948}})  # accuracy - 0.011
    assert not _decide(stress={**STRESS, "L": 0.9930})  # beats B but not the compact student
    assert not _decide(stress={**STRESS, "L": 0.9920, "S2": 0.9900})  # beats S2 but not B
    assert not _decide(verified=False)
    assert not _decide(seconds=1801)
    assert not _decide(gb=6.01)
    assert not _decide(size=8.1)


def test_training_cost_is_read_from_time_v():
    result = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", "b = b'x' * 200_000_000"],
                            capture_output=True, text=True, check=True)
    seconds, gb = time_v(result.stderr)
    assert 0 < seconds < 60
    assert 0.2 <= gb < 1.0  # the 200 MB the child touched, plus the interpreter
    with pytest.raises(ValueError):
        time_v("no timing here")


def test_the_page_shows_every_run_and_the_decision():
    from research.lite0_student import markdown

    metrics = {"roc_auc": 0.99, "accuracy": 0.95, "sensitivity": 0.97, "specificity": 0.8}
    names = ["B", "L", "S2"]
    result = {"members": {n: n for n in names}, "validation": {"int8": {n: metrics for n in names}},
              "stress_means": STRESS, "sizes_mb": {n: 1.0 for n in names},
              "latency_ms_p50_1thread": {n: 1.0 for n in names}, "test": {"int8": {n: metrics for n in names}},
              "lite0_student_decision": decide(VALIDATION, STRESS, True, 3.9, 1500, 5.0, "B", "L", "S2"),
              "train_seconds": 700.0, "train_gb": 5.45}
    page = markdown(result)
    assert all(f"| {n} | 0.9900 |" in page for n in names)
    assert "qualifies: True" in page and "5.45 GB" in page
