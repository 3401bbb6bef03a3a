"""A run killed after training (as the OOM killer did at the last step) is finished with --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from edgecxr.edge_runtime.metadata import sha256_file
from edgecxr.edge_runtime.run_folder import MODEL_FILE, TRAINED_FILE, staging_folder
from edgecxr.edge_runtime.python_command import python_module

TRAIN_ARGS = ["--epochs", "1", "--batch-size", "16", "--val-fraction", "0.25", "--seed", "1"]


def cli(*args):
    return [*python_module("edgecxr.cli"), *map(str, args)]


@pytest.mark.slow
def test_a_run_killed_after_training_resumes_without_retraining(tiny_kaggle, tmp_path):
    out = tmp_path / "run"
    staging = staging_folder(out)
    process = subprocess.Popen(cli("train", "--data", tiny_kaggle, "--out", out, *TRAIN_ARGS),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (staging / TRAINED_FILE).is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)  # at the final scoring, like the kernel's OOM killer
    process.wait()
    assert not out.exists(), "the run finished before it could be killed"
    trained_sha = sha256_file(staging / MODEL_FILE)
    record = json.loads((staging / TRAINED_FILE).read_text())

    # Other settings are refused (they would publish a model that the command did not train).
    other = subprocess.run(cli("train", "--data", tiny_kaggle, "--out", out, *TRAIN_ARGS[:-1], "2", "--resume"),
                           capture_output=True, text=True, timeout=600)
    assert other.returncode == 2 and "seed" in other.stderr and "Traceback" not in other.stderr

    done = subprocess.run(cli("train", "--data", tiny_kaggle, "--out", out, *TRAIN_ARGS, "--resume"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stdout + done.stderr
    assert sha256_file(out / MODEL_FILE) == trained_sha  # the trained weights, not a new training
    assert json.loads((out / "history.json").read_text()) == record["history"]
    assert not staging.exists() and not (out / TRAINED_FILE).exists()


def test_resume_with_nothing_to_resume_is_one_line(tiny_kaggle, tmp_path):
    done = subprocess.run(cli("train", "--data", tiny_kaggle, "--out", tmp_path / "never", "--resume"),
                          capture_output=True, text=True, timeout=600, env={**os.environ})
    assert done.returncode == 2 and "nothing to resume" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
