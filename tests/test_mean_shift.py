"""The site monitor's mean-shift pieces (edge_runtime/mean_shift.py, convert/monitor_nulls.py): the
statistic by hand, the p-value, batches of whole patients, nulls drawn by patient that keep false
alarms where an independence null does not, and their round trip through the metadata."""

from __future__ import annotations

import numpy as np
import pytest

from edgecxr.convert.monitor_nulls import patient_batch, refitted_null, training_layout_test
from edgecxr.edge_runtime.errors import MetadataError
from edgecxr.edge_runtime.mean_shift import MeanShiftMonitor, PatientNull, ReferenceMoments


def test_mean_shift_statistic_by_hand():
    reference = np.array([[0.0], [1.0], [2.0], [3.0]])  # mean 1.5, sample variance 5/3
    moments = ReferenceMoments.of(reference)
    batch = np.array([[3.0], [4.0]])  # mean 3.5: difference 2
    assert moments.statistic(batch) == pytest.approx(2.0 ** 2 / (5 / 3) / (1 / 2 + 1 / 4))
    # Correlated numbers count once: the same shift along a duplicated column gives the same T.
    doubled = ReferenceMoments.of(np.hstack([reference, reference]))
    assert doubled.statistic(np.hstack([batch, batch])) == pytest.approx(moments.statistic(batch), rel=1e-9)


def test_patient_null_p_value_counts_the_batch_itself():
    null = PatientNull(np.arange(1.0, 20.0), batch_size=50, sizes=(20, 50), seed=0)  # 1 .. 19
    assert null.p_value(100.0) == 1 / 20  # beyond every draw: only itself
    assert null.p_value(19.0) == 2 / 20  # ties count as at least as large
    assert null.p_value(0.0) == 1.0


def test_a_patient_batch_holds_whole_patients_and_never_shares_one_with_the_rest():
    rng = np.random.default_rng(0)
    groups = [np.arange(start, start + size) for start, size in zip(np.cumsum([0, 3, 1, 5, 2, 4, 1, 6]), [3, 1, 5, 2, 4, 1, 6, 2])]
    for _ in range(50):
        batch, rest = patient_batch(groups, 10, rng)
        assert len(batch) == 10 and not set(batch) & set(rest)
        touched = [g for g in groups if set(g) & set(batch)]
        assert sum(not set(g) <= set(batch) for g in touched) <= 1  # at most the last patient is cut
        assert all(not set(g) & set(rest) for g in touched)  # and its other films are in neither
    with pytest.raises(ValueError, match="fewer than a batch"):
        patient_batch(groups, 100, rng)


def clustered(rng, patients: int, per_patient: int, dims: int = 5, spread: float = 1.0) -> tuple[np.ndarray, list[str]]:
    """Films of one patient share a patient-level offset (as real patients' films look alike)."""
    offsets = rng.normal(0, spread, (patients, dims))
    values = np.repeat(offsets, per_patient, axis=0) + rng.normal(0, 0.5, (patients * per_patient, dims))
    return values, [f"person{k}_virus_{j}.jpeg" for k in range(patients) for j in range(per_patient)]


def test_the_patient_null_keeps_false_alarms_where_an_independence_null_does_not():
    # Averaged over references: with one reference the rate itself varies (its mean is off the
    # population's by chance, and every batch is compared with it), as the study found on real data.
    rng = np.random.default_rng(1)
    alarms_patient = alarms_chi2 = batches = 0
    chi2_95 = 11.07  # chi-square, 5 degrees of freedom, 95th percentile (tables)
    for _ in range(4):
        reference, patients = clustered(rng, 150, 4)
        null = refitted_null(reference, patients, seed=0, draws=400)
        assert null is not None and null.batch_size in (20, 50, 100) and len(null.statistics) == 400
        moments = ReferenceMoments.of(reference)
        for _ in range(100):
            batch, _ = clustered(rng, 10, 4)  # new patients from the same population: no shift
            t = moments.statistic(batch)
            alarms_patient += null.p_value(t) < 0.05
            alarms_chi2 += t > chi2_95
            batches += 1
        shifted, _ = clustered(rng, 10, 4)
        assert null.p_value(moments.statistic(shifted + 1.5)) < 0.05  # a real shift is still seen
    assert alarms_chi2 / batches > 0.3  # films taken as independent: that null is far too narrow
    # 5 % by design; measured 5.4 % over 5 references of 200 patients (2026-12-07); the bound leaves
    # room for 400 batches and a finite null.
    assert alarms_patient / batches <= 0.1


def test_too_small_a_reference_has_no_patient_null():
    values, patients = clustered(np.random.default_rng(2), 10, 4, dims=17)  # 40 films for 17 numbers
    assert refitted_null(values, patients, seed=0) is None
    with pytest.raises(ValueError, match="image paths"):
        refitted_null(values, patients[:-1], seed=0)


def test_the_layout_test_takes_every_training_film_as_reference_and_its_null_from_training_patients():
    rng = np.random.default_rng(0)
    values, paths = clustered(rng, 300, 4, dims=2, spread=1.0)
    layout = training_layout_test(values, paths, seed=1, draws=300)
    assert layout.reference.n == 1200
    np.testing.assert_allclose(layout.reference.mean, values.mean(axis=0))
    assert layout.null.sizes == (20, 50, 100) and len(layout.null.statistics) == 300
    assert "of 300" in layout.description and "training patients" in layout.description
    # Each batch is whole patients against the films not in it: independent films would give about
    # chi-square with 2 degrees of freedom (95th percentile 6.0); four alike films per patient
    # inflate it about fourfold. Batches left in their own reference would not be inflated so.
    assert np.quantile(layout.null.statistics, 0.95) > 12
    assert training_layout_test(values[:24], paths[:24], seed=1) is None  # too few films for a batch and a rest


def test_the_monitor_survives_its_metadata_round_trip_and_refuses_a_broken_one():
    rng = np.random.default_rng(3)
    values, paths = clustered(rng, 100, 3, dims=3)
    layout = training_layout_test(*clustered(rng, 200, 3, dims=3), seed=0, draws=200)
    monitor = MeanShiftMonitor(refitted_null(values, paths, seed=0, draws=200), layout.reference, layout.null,
                               {"rule": "test"})
    again = MeanShiftMonitor.from_dict(monitor.to_dict(), "feature_reference.mean_shift")
    batch = values[:40] + 0.3
    # Stored with 9 and 5 significant digits: the statistic and the p-value agree to that.
    assert again.layout_reference.statistic(batch) == pytest.approx(monitor.layout_reference.statistic(batch), rel=1e-6)
    for name in ("outputs_null", "layout_null"):
        before, after = getattr(monitor, name), getattr(again, name)
        np.testing.assert_allclose(after.statistics, before.statistics, rtol=1e-4)
        assert (after.batch_size, after.sizes, after.seed) == (before.batch_size, before.sizes, before.seed)
    broken = monitor.to_dict()
    broken["layout_reference"]["covariance"] = broken["layout_reference"]["covariance"][:-1]
    with pytest.raises(MetadataError, match="layout_reference is inconsistent"):
        MeanShiftMonitor.from_dict(broken, "feature_reference.mean_shift")
    broken = monitor.to_dict()
    broken["outputs_null"]["statistics"] = broken["outputs_null"]["statistics"][:50]
    with pytest.raises(MetadataError, match="outputs_null needs at least 100"):
        MeanShiftMonitor.from_dict(broken, "feature_reference.mean_shift")
    with pytest.raises(MetadataError, match="layout_null is malformed"):
        MeanShiftMonitor.from_dict({**monitor.to_dict(), "layout_null": None}, "feature_reference.mean_shift")
