"""`edgecxr train --teacher`: the mean logit, the teachers' views, and a real student run."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.metadata import read_metadata
from edgecxr.edge_runtime.python_command import python_module
from edgecxr.train.distillation import mean_logit


def test_mean_logit_is_the_mean_of_the_log_odds():
    # log-odds of 0.9 and 0.1 cancel; of 0.8 (log 4) and 0.5 (0): mean log 2 -> 2/3.
    np.testing.assert_allclose(mean_logit([[0.9, 0.8], [0.1, 0.5]]), [0.5, 2 / 3])


def test_a_saturated_member_does_not_decide_alone():
    # An output of exactly 0 is clipped to 1e-6 (log-odds -13.8), so a sure second member (log-odds
    # 13.8) still pulls the mean back to 0.5 instead of being outvoted by -inf.
    np.testing.assert_allclose(mean_logit([[0.0], [1 - 1e-6]]), [0.5], atol=1e-9)


def test_views_repeat_by_seed_and_teach_on_the_same_view(tiny_run):
    """Views are drawn before preprocessing, repeatably; each target is the teacher's answer on that
    very view (one teacher with the student's preprocessing sees exactly the student's input)."""
    from edgecxr.edge_runtime.batching import predict_in_batches
    from edgecxr.edge_runtime.preprocessing import scale_pixels
    from edgecxr.edge_runtime.run_folder import RunFolder
    from edgecxr.train.distillation import open_teachers, teacher_views

    run = RunFolder.open(tiny_run)
    spec = run.metadata.preprocessing
    teachers = open_teachers([tiny_run], [str(s.path) for s in run.split("validation")])
    samples = run.split("train")[:6]
    pixels, targets = teacher_views(teachers, samples, spec, views=2, seed=7)
    assert pixels.shape == (12, *spec.input_shape) and pixels.dtype == np.uint8 and targets.shape == (12,)
    again, _ = teacher_views(teachers, samples, spec, views=2, seed=7)
    np.testing.assert_array_equal(pixels, again)
    assert not np.array_equal(pixels[:6], pixels[6:])  # the two views of a film differ
    assert not np.array_equal(pixels, teacher_views(teachers, samples, spec, views=2, seed=8)[0])
    direct = predict_in_batches(teachers[0].model.predict_proba, pixels,
                                prepare=lambda b: scale_pixels(b.astype(np.float32), spec))
    # Tolerance: the views were scored in batches of 6, this call in one of 12; float32 kernels may
    # round the last bits differently by batch shape (about 1e-7), far below a view-to-view change.
    np.testing.assert_allclose(targets, np.clip(direct, 1e-6, 1 - 1e-6), rtol=1e-5, atol=1e-6)


def test_a_student_learns_from_its_teacher_and_says_so(tiny_kaggle, tiny_run, tmp_path):
    from edgecxr.train.hparams import TrainConfig
    from edgecxr.train.trainer import train

    teacher = read_metadata(tiny_run / "model.keras")
    # The tiny run's own data, fraction and seed: the same validation patients.
    config = TrainConfig(data=tiny_kaggle, out=tmp_path / "student", epochs=1, batch_size=16, val_fraction=0.25,
                         seed=1, teachers=[str(tiny_run)], teacher_views=2)
    student = read_metadata(train(config) / "model.keras")
    record = student.details["distillation"]
    assert record["views"] == 2
    assert record["teachers"] == [{"run": str(tiny_run), "arch": "compact", "sha256": teacher.sha256}]
    assert student.details["training"]["config"]["teachers"] == [str(tiny_run)]
    assert student.sha256 != teacher.sha256


def test_a_teacher_validated_on_other_patients_is_refused(tiny_kaggle, tiny_run, tmp_path):
    from edgecxr.train.hparams import TrainConfig
    from edgecxr.train.trainer import train

    config = TrainConfig(data=tiny_kaggle, out=tmp_path / "student", epochs=1, batch_size=16, val_fraction=0.25,
                         seed=2, teachers=[str(tiny_run)])
    with pytest.raises(EdgecxrError, match="validated on other patients"):
        train(config)
    assert not (tmp_path / "student").exists()


def test_a_missing_teacher_fails_before_anything_is_decoded(tmp_path):
    from edgecxr.train.hparams import TrainConfig
    from edgecxr.train.trainer import train

    # The data folder does not exist either: the teacher's path must be what fails first.
    config = TrainConfig(data=tmp_path / "no_data", out=tmp_path / "student", teachers=[str(tmp_path / "nope")])
    with pytest.raises(EdgecxrError, match="run folder not found"):
        train(config)


@pytest.mark.parametrize("options, message", [
    (["--arch", "efficientnet_lite0"], "--teacher trains the compact net only"),
    (["--distribute", "mirrored"], "--teacher does not run with --distribute"),
], ids=["backbone", "distribute"])
def test_cli_refuses_a_teacher_it_cannot_serve(options, message, tiny_kaggle, tiny_run, tmp_path):
    result = subprocess.run([*python_module("edgecxr.cli"), "train", "--data", str(tiny_kaggle), *options,
                             "--teacher", str(tiny_run), "--out", str(tmp_path / "s")],
                            capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "s").exists()
