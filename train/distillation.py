"""Training targets from teacher models instead of labels (`edgecxr train --teacher RUN ...`).

Each training film is warped a few times by the default augmentation *before* any preprocessing;
every teacher sees each warped view through its own preprocessing (equalisation included), and
the view's target is the teachers' mean logit turned back into a probability. The student learns
on exactly those views, with no further augmentation, so teacher and student always judge the same
picture ("consistent teaching", Beyer et al. 2022). Targets taken from the un-warped films alone
taught nothing: the teachers agree with the labels there, and the student ranked another site's
films no better (research/NOTEBOOK.md, "Distilling the ensemble into the compact net").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.folders import LabelledImage
from edgecxr.edge_runtime.metrics import log_odds
from edgecxr.edge_runtime.preprocessing import PreprocessSpec

VIEW_BATCH = 256  # films warped and scored at once: bounds a 224x224x3 teacher's inputs in memory
# Films are decoded at this size before warping, the size the Kaggle set is stored at: the teachers'
# and the student's own resizes then start from the same picture.
VIEW_SIZE = 224
def mean_logit(member_probs) -> np.ndarray:
    """The members' mean log-odds, turned back into a probability."""
    mean = np.mean([log_odds(probs) for probs in member_probs], axis=0)
    return 1.0 / (1.0 + np.exp(-mean))


@dataclass(frozen=True)
class Teacher:
    run: Path
    model: object  # a Keras backend (predict_proba, metadata)

    @property
    def spec(self) -> PreprocessSpec:
        return self.model.metadata.preprocessing


def open_teachers(runs: list, validation_paths: list[str]) -> list[Teacher]:
    """The teachers' Keras models; each must have been validated on the student's own patients, or
    it has seen the films the student's threshold and early stopping are judged on."""
    from edgecxr.edge_runtime.run_folder import RunFolder

    from .keras_backend import open_any_model

    wanted = sorted(str(Path(p).resolve()) for p in validation_paths)
    teachers = []
    for path in runs:
        run = RunFolder.open(Path(path))
        theirs = sorted(str(Path(s.path).resolve()) for s in run.split("validation"))
        if theirs != wanted:
            raise EdgecxrError(f"teacher {path} was validated on other patients than this run: train it with the "
                               f"same data, --val-fraction and --seed, or the student is judged on films a "
                               f"teacher learned")
        teachers.append(Teacher(Path(path), open_any_model(run.model_path)))
    return teachers


def teacher_views(teachers: list[Teacher], samples: list[LabelledImage], student_spec: PreprocessSpec,
                  views: int, seed: int, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """`views` warped copies of each film as the student's uint8 inputs (view-major), and the
    teachers' mean-logit probability on each same copy."""
    import tensorflow as tf
    from PIL import Image

    from edgecxr.edge_runtime.batching import predict_in_batches
    from edgecxr.edge_runtime.preprocessing import scale_pixels, to_pixels

    from .augment import AugmentConfig, augment_batch
    from .pixel_cache import load_pixels

    if views < 1:
        raise EdgecxrError("--teacher-views must be at least 1")
    raw_spec = PreprocessSpec(height=VIEW_SIZE, width=VIEW_SIZE, channels=1, equalize="none", scale=1.0, offset=0.0)
    raw = load_pixels(samples, raw_spec, "decoding the training films for the teachers").pixels
    inputs, targets = None, []  # filled in place: concatenating would hold every view twice at the peak
    for view in range(views):
        for start in range(0, len(raw), VIEW_BATCH):
            # One stateless stream per (run seed, view, batch): the same command draws the same views.
            stream = tf.constant([seed, view * 1_000_000 + start], dtype=tf.int64)
            warped = augment_batch(tf.constant(raw[start:start + VIEW_BATCH], tf.float32), stream, AugmentConfig())
            films = [Image.fromarray(image[:, :, 0]) for image in np.rint(warped.numpy()).astype(np.uint8)]
            answers = []
            for teacher in teachers:
                pixels = np.stack([to_pixels(film, teacher.spec) for film in films])
                answers.append(predict_in_batches(
                    teacher.model.predict_proba, pixels,
                    prepare=lambda batch, spec=teacher.spec: scale_pixels(batch.astype(np.float32), spec)))
            student = np.stack([to_pixels(film, student_spec) for film in films])
            if inputs is None:
                inputs = np.empty((views * len(raw), *student.shape[1:]), dtype=student.dtype)
            first = view * len(raw) + start
            inputs[first:first + len(student)] = student
            targets.append(mean_logit(answers))
            if progress is not None:
                progress(len(films))
    return inputs, np.concatenate(targets).astype(np.float32)


def describe(teachers: list[Teacher], views: int) -> dict:
    """What the run's metadata records about where its targets came from."""
    return {"teachers": [{"run": str(t.run), "arch": t.model.metadata.arch, "sha256": t.model.metadata.sha256}
                         for t in teachers],
            "views": views, "targets": "teachers' mean-logit probability on each warped view"}
