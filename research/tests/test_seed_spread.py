"""The seed-spread benchmark's arithmetic: mean and sample standard deviation over seeds."""

import pytest

from research.seed_spread import markdown, summary


def row(seed, val_acc, test_acc):
    metrics = lambda acc: {"accuracy": acc, "roc_auc": 0.9, "sensitivity": 0.95, "specificity": 0.5}  # noqa: E731
    return {"seed": seed, "threshold": 0.4, "train_seconds": 270.0,
            "validation": metrics(val_acc), "test": metrics(test_acc)}


def test_summary_is_mean_and_sample_sd_over_seeds():
    stats = summary([row(1, 0.9, 0.80), row(2, 0.9, 0.84), row(3, 0.9, 0.88)])
    assert stats["test_accuracy"]["mean"] == pytest.approx(0.84)
    assert stats["test_accuracy"]["std"] == pytest.approx(0.04)  # ddof=1: sqrt((0.0016 * 2) / 2)
    assert (stats["test_accuracy"]["min"], stats["test_accuracy"]["max"]) == (0.80, 0.88)
    assert stats["validation_accuracy"]["std"] == 0.0


def test_markdown_has_a_line_per_seed_and_the_mean():
    rows = [row(1, 0.9, 0.80), row(2, 0.9, 0.84)]
    text = markdown(rows, summary(rows), "header")
    lines = text.splitlines()
    assert lines[0] == "header"
    assert sum(line.startswith("| 1 |") or line.startswith("| 2 |") for line in lines) == 2
    assert "0.820 ± 0.028" in lines[-1]
