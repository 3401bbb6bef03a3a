"""The ensemble and distillation studies: the members' shared split, and each pre-registered rule
applied as written (every check able to fail on its own). The mean logit and the teachers' views
are the product's (tests/test_distillation.py)."""

import json
import shutil

import pytest

from research.distil_study import decide as decide_distil
from research.distil_study import run_name
from research.ensemble_study import decide as decide_ensemble
from research.ensemble_study import same_split


def _members(auc=(0.990, 0.998), accuracy=(0.95, 0.96), ensemble=(0.998, 0.96)):
    validation = {"a": {"roc_auc": auc[0], "accuracy": accuracy[0]},
                  "b": {"roc_auc": auc[1], "accuracy": accuracy[1]},
                  "ensemble": {"roc_auc": ensemble[0], "accuracy": ensemble[1]}}
    return validation


def test_the_ensemble_rule_passes_and_each_check_can_fail():
    stress = {"a": 0.97, "b": 0.99, "ensemble": 0.995}
    sizes = {"a": 0.1, "b": 3.9}
    assert decide_ensemble(_members(), stress, sizes, ["a", "b"])["qualifies"]
    # 1: AUC more than 0.001 under the better member
    assert not decide_ensemble(_members(ensemble=(0.9965, 0.96)), stress, sizes, ["a", "b"])["qualifies"]
    # 1: accuracy more than 0.010 under the better member
    assert not decide_ensemble(_members(ensemble=(0.998, 0.949)), stress, sizes, ["a", "b"])["qualifies"]
    # 2: the stressed mean must beat the better member, not only the worse
    assert not decide_ensemble(_members(), {**stress, "ensemble": 0.98}, sizes, ["a", "b"])["qualifies"]
    # 3: over 8 MB together
    assert not decide_ensemble(_members(), stress, {"a": 4.1, "b": 4.0}, ["a", "b"])["qualifies"]


def test_members_validated_on_other_patients_are_refused(tiny_run, tmp_path):
    from edgecxr.edge_runtime.errors import EdgecxrError
    from edgecxr.edge_runtime.run_folder import RunFolder

    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    split = json.loads((other / "split.json").read_text())
    split["validation"], split["train"] = split["validation"][1:], split["train"] + split["validation"][:1]
    (other / "split.json").write_text(json.dumps(split))
    same_split([RunFolder.open(tiny_run), RunFolder.open(tiny_run)])
    with pytest.raises(EdgecxrError, match="different patients"):
        same_split([RunFolder.open(tiny_run), RunFolder.open(other)])


def _distil_rows(student_stress=(0.99, 0.99, 0.97), baseline_stress=(0.98, 0.98, 0.98),
                 student_auc=0.995, student_accuracy=0.95, verified=(True, True, True)):
    rows = {}
    for i, seed in enumerate((42, 43, 44)):
        rows[run_name("baseline", seed)] = {"val_int8": {"roc_auc": 0.995, "accuracy": 0.95},
                                            "stress_mean": baseline_stress[i], "verified": True}
        rows[run_name("student", seed)] = {"val_int8": {"roc_auc": student_auc, "accuracy": student_accuracy},
                                           "stress_mean": student_stress[i], "verified": verified[i]}
    return rows


def test_the_distillation_rule_passes_and_each_check_can_fail():
    seeds = [42, 43, 44]
    assert decide_distil(_distil_rows(), seeds)["qualifies"]
    assert not decide_distil(_distil_rows(student_auc=0.9935), seeds)["qualifies"]  # 1: AUC
    assert not decide_distil(_distil_rows(student_accuracy=0.939), seeds)["qualifies"]  # 1: accuracy
    # 2: a higher mean from one seed alone is not enough (wins in 1 of 3)
    lone = decide_distil(_distil_rows(student_stress=(0.999, 0.97, 0.97)), seeds)
    assert lone["stress_wins"] == 1 and not lone["qualifies"]
    # 2: two wins but a lower mean
    assert not decide_distil(_distil_rows(student_stress=(0.981, 0.981, 0.90)), seeds)["qualifies"]
    assert not decide_distil(_distil_rows(verified=(True, False, True)), seeds)["qualifies"]  # 3


def test_a_rule_against_another_arm_reads_that_arm_and_waits_for_three_seeds():
    # research/ssl_teach_rule.md: the pretrained student against S2 ("consistent"), not the baseline.
    rows = {run_name("consistent" if name.startswith("baseline") else "sslteach", int(name[-2:])): row
            for name, row in _distil_rows().items()}
    assert decide_distil(rows, [42, 43, 44], "sslteach", against="consistent")["qualifies"]
    weaker = {**rows, run_name("sslteach", 42): {**rows[run_name("sslteach", 42)], "stress_mean": 0.90}}
    assert not decide_distil(weaker, [42, 43, 44], "sslteach", against="consistent")["qualifies"]
    partial = decide_distil(rows, [42], "sslteach", against="consistent")
    assert partial["qualifies"] is None and "needs 3 seeds" in partial["note"]
