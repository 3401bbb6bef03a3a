"""The monitor study's bookkeeping: patients grouped from file names, and its pre-registered rule
applied as written (research/monitor_rule.md)."""

from pathlib import Path

from research.monitor_study import MONITORS, decide, groups_of


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
