"""The monitor study's bookkeeping: patients grouped from file names, and its pre-registered rule
applied as written (research/monitor_rule.md)."""

from pathlib import Path

import numpy as np
import pytest

from edgecxr.edge_runtime.mean_shift import ReferenceMoments
from research.monitor_study import (MONITORS, decide, decide_fisher, decide_layout, decide_reference,
                                    decide_training_null, fisher_p_value, fixed_reference_null, groups_of)


def test_films_are_grouped_by_patient_from_their_names():
    paths = [Path("person1_virus_6.jpeg"), Path("IM-0001-0001.jpeg"), Path("person1_bacteria_2.jpeg"),
             Path("NORMAL2-IM-0007-0001.jpeg"), Path("IM-0001-0002.jpeg")]
    groups = sorted(sorted(g.tolist()) for g in groups_of(paths))
    assert groups == [[0, 2], [1, 4], [3]]


def artifact(name: str, h17_alarms: float, h17_other: float, h17_detect: float, ks_detect: float) -> dict:
    def rates(alarms, detect):
        return {"false_alarms_by_patient": alarms, "detections_by_patient": detect, "detections_by_image": detect}

    def sizes(h17, ks):
        cells = {key: {m: 0.0 for m in MONITORS} for key in rates(0, 0)}
        for key in cells:
            cells[key]["H17"], cells[key]["KS17"] = h17[key], ks[key]
        return {"100": cells}

    return {"artifact": name, "halvings": [
        {"shipped": True, "sizes": sizes(rates(h17_alarms, h17_detect), rates(0.1, ks_detect))},
        {"shipped": False, "sizes": sizes(rates(h17_other, h17_detect), rates(0.1, ks_detect))}]}


def test_the_rule_adopts_only_when_every_tflite_artifact_passes_all_three_checks():
    passing = artifact("runs/a/export/model_int8.tflite", 0.01, 0.03, 0.85, 0.80)
    assert decide([passing])["adopt_H17"]
    assert not decide([passing, artifact("runs/b/export/model_int8.tflite", 0.01, 0.03, 0.80, 0.815)])["adopt_H17"]
    assert not decide([artifact("runs/a/export/model_int8.tflite", 0.06, 0.03, 0.9, 0.5)])["adopt_H17"]
    assert not decide([artifact("runs/a/export/model_int8.tflite", 0.01, 0.051, 0.9, 0.5)])["adopt_H17"]
    # ONNX rows are reported, not decided on.
    assert decide([passing, artifact("runs/a/export/model_int8.onnx", 0.5, 0.5, 0.0, 1.0)])["adopt_H17"]


def reference_artifact(name: str, arch: str, alarms: float, other: float, detect: float, ks_patient: float,
                       h17: float) -> dict:
    def cells(alarm_rate, rates):
        keys = ("false_alarms_by_patient", "detections_by_patient", "detections_by_image")
        result = {key: {m: 0.0 for m in MONITORS} for key in keys}
        result["false_alarms_by_patient"]["H9+L8"] = alarm_rate
        for monitor, rate in rates.items():
            result["detections_by_patient"][monitor] = rate
        return {"100": result}

    rates = {"H9+L8": detect, "KS17-patient": ks_patient, "H17": h17}
    return {"artifact": name, "arch": arch, "halvings": [{"shipped": True, "sizes": cells(alarms, rates)},
                                                         {"shipped": False, "sizes": cells(other, rates)}]}


def test_the_reference_rule_needs_both_compact_tflite_artifacts_to_pass_against_both_calibrated_monitors():
    seed42 = reference_artifact("runs/demo/export/model_int8.tflite", "compact", 0.02, 0.04, 0.9, 0.6, 0.8)
    seed43 = reference_artifact("runs/c43/export/model_int8.tflite", "compact", 0.03, 0.05, 0.7, 0.69, 0.5)
    assert decide_reference([seed42, seed43])["adopt_H9_L8"]
    # One artifact is not the two the rule names.
    assert not decide_reference([seed42])["adopt_H9_L8"]
    # Not above H17's detections, or above the false-alarm limit on either reference: kept.
    assert not decide_reference([seed42, reference_artifact("runs/c43/export/model_int8.tflite", "compact",
                                                            0.03, 0.05, 0.7, 0.6, 0.7)])["adopt_H9_L8"]
    assert not decide_reference([seed42, reference_artifact("runs/c43/export/model_int8.tflite", "compact",
                                                            0.03, 0.051, 0.9, 0.6, 0.7)])["adopt_H9_L8"]
    # Lite0 and ONNX artifacts are reported, never decided on.
    lite0 = reference_artifact("runs/lite0/export/model_int8.tflite", "efficientnet_lite0", 0.5, 0.5, 0.0, 1.0, 1.0)
    onnx = reference_artifact("runs/demo/export/model_int8.onnx", "compact", 0.5, 0.5, 0.0, 1.0, 1.0)
    assert decide_reference([seed42, seed43, lite0, onnx])["adopt_H9_L8"]


def layout_artifact(name: str, arch: str, detections: dict, alarms: float = 0.02, other: float = 0.03) -> dict:
    keys = ("false_alarms_by_patient", "detections_by_patient", "detections_by_image")

    def cells(alarm_rate):
        result = {key: {m: 0.0 for m in MONITORS} for key in keys}
        for monitor, rate in detections.items():
            result["detections_by_patient"][monitor] = rate
            result["false_alarms_by_patient"][monitor] = alarm_rate
        return {"100": result}

    return {"artifact": name, "arch": arch, "halvings": [{"shipped": True, "sizes": cells(alarms)},
                                                         {"shipped": False, "sizes": cells(other)}]}


def test_the_layout_rule_needs_six_compact_runs_five_points_more_and_a_higher_lowest():
    def six(l16, l64, l8=(0.9, 0.95, 0.89, 0.97, 0.95, 0.40), **kwargs):
        return [layout_artifact(f"runs/r{k}/export/model_int8.tflite", "compact",
                                {"H9+L8": l8[k], "H9+L16": l16[k], "H9+L64": l64[k]}, **kwargs) for k in range(6)]

    better = (0.95, 0.97, 0.93, 0.98, 0.96, 0.80)  # mean 9.5 points above, lowest 0.80 > 0.40
    alike = (0.9, 0.95, 0.89, 0.97, 0.95, 0.45)  # lowest higher, mean under 5 points above
    assert decide_layout(six(better, alike))["recommend"] == "H9+L16"
    assert decide_layout(six(alike, better))["recommend"] == "H9+L64"
    assert decide_layout(six(alike, alike))["recommend"] is None
    assert decide_layout(six(better, better, alarms=0.06))["recommend"] is None  # false alarms over 5 %
    assert decide_layout(six(better, alike)[:5])["recommend"] is None  # the rule names six runs
    lite0 = layout_artifact("runs/lite0/export/model_int8.tflite", "efficientnet_lite0",
                            {"H9+L8": 1.0, "H9+L16": 0.0, "H9+L64": 0.0}, alarms=0.5)
    assert decide_layout(six(better, alike) + [lite0])["recommend"] == "H9+L16"  # Lite0 reported only


@pytest.mark.parametrize("decide_rule, adopt, shipped_name, candidate_name", [
    (decide_training_null, "adopt_H9_L8t", "H9+L8", "H9+L8t"),  # research/monitor_training_null_rule.md
    (decide_fisher, "adopt_H9xL8t", "H9+L8t", "H9xL8t"),  # research/monitor_fisher_rule.md
])
def test_a_replacement_rule_needs_six_compact_runs_a_higher_mean_and_no_lower_lowest(decide_rule, adopt, shipped_name,
                                                                                     candidate_name):
    def six(candidate, shipped=(0.84, 0.94, 0.83, 0.89, 0.95, 0.40), **kwargs):
        return [layout_artifact(f"runs/r{k}/export/model_int8.tflite", "compact",
                                {shipped_name: shipped[k], candidate_name: candidate[k]}, **kwargs) for k in range(6)]

    better = (0.87, 0.87, 0.92, 0.91, 0.89, 0.70)  # mean 86.0 % against 80.8 %, lowest 0.70 >= 0.40
    assert decide_rule(six(better))[adopt]
    assert not decide_rule(six((0.99, 0.99, 0.99, 0.99, 0.99, 0.39)))[adopt]  # a lower lowest
    assert not decide_rule(six((0.80, 0.80, 0.80, 0.80, 0.80, 0.40)))[adopt]  # a lower mean
    assert not decide_rule(six(better, other=0.051))[adopt]  # others' false alarms over 5 %
    assert not decide_rule(six(better, alarms=0.06))[adopt]  # shipped halving's over 5 %
    assert not decide_rule(six(better)[:5])[adopt]  # the rules name six runs
    lite0 = layout_artifact("runs/lite0/export/model_int8.tflite", "efficientnet_lite0",
                            {shipped_name: 1.0, candidate_name: 0.0}, alarms=0.5)
    assert decide_rule(six(better) + [lite0])[adopt]  # Lite0 reported only


def test_the_fixed_reference_null_holds_out_whole_patients_and_keeps_the_strictest_size():
    # The layout null shipped until research/monitor_training_null_rule.md; the study still measures it.
    rng = np.random.default_rng(0)
    reference = ReferenceMoments.of(rng.normal(size=(4000, 2)))
    offsets = rng.normal(0, 1.0, (60, 2))  # one offset per patient: four alike films each
    values = np.repeat(offsets, 4, axis=0) + rng.normal(0, 0.5, (240, 2))
    paths = [f"person{k}_virus_{j}.jpeg" for k in range(60) for j in range(4)]
    null = fixed_reference_null(reference, values, paths, seed=1, sizes=(20, 100), draws=300)
    assert null.sizes == (20, 100) and null.batch_size in (20, 100) and len(null.statistics) == 300
    # Independent films would give about chi-square with 2 degrees of freedom (95th percentile 6.0);
    # four alike films per patient inflate it about fourfold.
    assert np.quantile(null.statistics, 0.95) > 12
    assert null.p_value(np.inf) == 1 / 301
    assert fixed_reference_null(reference, values[:10], paths[:10], seed=1) is None  # smaller than any batch


def test_fishers_combined_p_value_is_uniform_for_independent_uniform_p_values():
    # Under no shift each p-value is uniform; if the two are independent the combination must be too.
    # 200,000 pairs: the rate below 5 % has a binomial standard error of 0.05 percentage points.
    rng = np.random.default_rng(0)
    pairs = rng.uniform(size=(200_000, 2))
    combined = np.array([fisher_p_value(p) for p in pairs])
    assert abs(np.mean(combined < 0.05) - 0.05) < 0.002
    assert abs(np.mean(combined < 0.5) - 0.5) < 0.005
    assert fisher_p_value((1.0, 1.0)) == 1.0
    # One strong test alone still flags; two middling ones together flag where Bonferroni would not.
    assert fisher_p_value((0.0005, 0.9)) < 0.05
    assert fisher_p_value((0.03, 0.1)) < 0.05 and min(0.03, 0.1) > 0.025
