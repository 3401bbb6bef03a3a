"""The ensemble and distillation studies: the mean logit, the members' shared split, and each
pre-registered rule applied as written (every check able to fail on its own)."""

import json
import shutil

import numpy as np
import pytest

from research.distil_study import decide as decide_distil
from research.distil_study import run_name
from research.ensemble_study import decide as decide_ensemble
from research.ensemble_study import mean_logit, same_split


def test_mean_logit_is_the_mean_of_the_log_odds():
    # log-odds of 0.9 and 0.1 cancel; of 0.8 (log 4) and 0.5 (0): mean log 2 -> 2/3.
    np.testing.assert_allclose(mean_logit([[0.9, 0.8], [0.1, 0.5]]), [0.5, 2 / 3])


def test_a_saturated_member_does_not_decide_alone():
    # An int8 output of exactly 0 is clipped to 1e-6 (log-odds -13.8), so a sure second member
    # (log-odds 13.8) still pulls the mean back to 0.5 instead of being outvoted by -inf.
    np.testing.assert_allclose(mean_logit([[0.0], [1 - 1e-6]]), [0.5], atol=1e-9)


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


def test_consistent_views_repeat_by_seed_and_teach_on_the_same_view(tiny_run):
    """Each view is drawn before preprocessing, repeatably; its target is the teacher's answer on
    that very view, so a teacher that is also the student's preprocessing sees what the student sees."""
    from edgecxr.edge_runtime.batching import predict_in_batches
    from edgecxr.edge_runtime.preprocessing import scale_pixels
    from edgecxr.edge_runtime.run_folder import RunFolder
    from edgecxr.train.keras_backend import open_any_model
    from research.distil_study import consistent_views

    run = RunFolder.open(tiny_run)
    spec = run.metadata.preprocessing
    samples = run.split("train")[:6]
    pixels, targets = consistent_views([tiny_run], samples, spec, views=2, seed=7)
    assert pixels.shape == (12, *spec.input_shape) and pixels.dtype == np.uint8 and targets.shape == (12,)
    again, _ = consistent_views([tiny_run], samples, spec, views=2, seed=7)
    np.testing.assert_array_equal(pixels, again)
    assert not np.array_equal(pixels[:6], pixels[6:])  # the two views of a film differ
    other, _ = consistent_views([tiny_run], samples, spec, views=2, seed=8)
    assert not np.array_equal(pixels, other)
    # One teacher: the mean logit is its own probability, on the student's own input of that view.
    model = open_any_model(run.model_path)
    direct = predict_in_batches(model.predict_proba, pixels,
                                prepare=lambda b: scale_pixels(b.astype(np.float32), spec))
    # Tolerance: the study scored batches of 6, this call one of 12; float32 kernels may round the
    # last bits differently by batch shape (about 1e-7 here), far below a view-to-view difference.
    np.testing.assert_allclose(targets, np.clip(direct, 1e-6, 1 - 1e-6), rtol=1e-5, atol=1e-6)
