"""The shift-augmentation study applies its pre-registered rule as written, on validation only."""

import argparse
import shutil

import pytest

from research.shift_augment import BASELINE, CANDIDATES, decide, saved_augment, selection_score, train_run
from edgecxr.train.augment import AugmentConfig


def result(candidate, seed, clean_auc=0.996, accuracy=0.96, auc=0.99, specificity=0.94, sensitivity=0.94):
    row = {"candidate": candidate, "seed": seed, "clean": {"roc_auc": clean_auc, "accuracy": accuracy},
           "stressed": {"roc_auc": auc, "specificity": specificity, "sensitivity": sensitivity}}
    row["score"] = selection_score(row)
    return row  # no "test" key: the rule must not need one


def study(changed=None):
    """Baseline and every candidate at the baseline's figures, seeds 42 and 43, except `changed`."""
    rows = {(name, seed): result(name, seed) for name in CANDIDATES for seed in (42, 43)}
    for (name, seed), kwargs in (changed or {}).items():
        rows[(name, seed)] = result(name, seed, **kwargs)
    return list(rows.values())


def test_the_score_weighs_clean_auc_stressed_auc_and_stressed_specificity_alike():
    assert selection_score(result("x", 1, clean_auc=0.99, auc=0.96, specificity=0.90)) == pytest.approx(0.95)


def test_a_candidate_clear_of_the_seed_spread_and_the_guard_rails_is_adopted():
    decision = decide(study({("frame-mild", 42): {"specificity": 0.97}, ("frame-mild", 43): {"specificity": 0.96},
                               ("exposure", 42): {"specificity": 0.95}, ("exposure", 43): {"specificity": 0.95}}))
    assert decision["complete"] and decision["adopted"] == "frame-mild"  # the larger margin of two passing
    assert decision["settings"]["exposure"]["passes"]


def test_a_gain_within_the_seed_spread_is_not_adopted():
    # Baseline seeds 0.02 apart in stressed specificity: a 0.015 mean gain in it is noise.
    decision = decide(study({(BASELINE, 43): {"specificity": 0.96},
                               ("exposure", 42): {"specificity": 0.965}, ("exposure", 43): {"specificity": 0.965}}))
    assert decision["adopted"] is None
    assert not decision["settings"]["exposure"]["checks"]["beats baseline by more than the seed spread"]


@pytest.mark.parametrize("worse, rail", [({"clean_auc": 0.992}, "clean validation AUC"),
                                         ({"accuracy": 0.94}, "held-out-patient accuracy"),
                                         ({"sensitivity": 0.91}, "stressed sensitivity")])
def test_each_guard_rail_vetoes_a_better_score(worse, rail):
    better = {"specificity": 1.0, "auc": 1.0}
    decision = decide(study({("frame+exposure", s): {**better, **worse} for s in (42, 43)}))
    verdict = decision["settings"]["frame+exposure"]
    assert verdict["margin"] > 0.01 and not verdict["passes"] and decision["adopted"] is None
    assert [check for check, ok in verdict["checks"].items() if not ok] == [
        next(check for check in verdict["checks"] if check.startswith(rail))]


def test_no_decision_until_every_setting_has_every_seed():
    rows = [r for r in study() if not (r["candidate"] == "exposure" and r["seed"] == 43)]
    decision = decide(rows)
    assert not decision["complete"] and decision["missing"] == ["exposure-seed43"] and decision["adopted"] is None


def test_runs_from_before_the_new_fields_count_as_trained_without_them():
    old = {"config": {"augment": {k: v for k, v in AugmentConfig().to_dict().items()
                                  if k not in ("frame_area", "frame_aspect", "gamma")}}}
    assert saved_augment(old) == AugmentConfig().to_dict()


def test_a_run_not_trained_as_the_setting_says_is_refused(tiny_run, tmp_path, tiny_kaggle):
    # The tiny run trained 1 epoch with seed 1: reusing it as the baseline would compare unlike runs.
    shutil.copytree(tiny_run, tmp_path / f"{BASELINE}-seed1")
    args = argparse.Namespace(runs=tmp_path, data=tiny_kaggle, retrain=False)
    with pytest.raises(SystemExit, match="was not trained as the default compact model"):
        train_run(BASELINE, 1, args)
