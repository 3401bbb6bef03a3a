"""`edgecxr commission`: exact intervals, the conservative site-threshold rule, and the command end to
end on real X-rays with a real tiny int8 model (the original must come out byte-identical)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_runner import run_cli
from edge_artifacts import edge_artifacts
from edgecxr.edge_runtime.intervals import clopper_pearson, lower_bound
from edgecxr.edge_runtime.metadata import metadata_path, read_metadata, sha256_file
from edgecxr.edge_runtime.site_threshold import allowed_misses, choose_site_threshold, positives_needed


# --- intervals -------------------------------------------------------------------------------------

@pytest.mark.parametrize("successes, n, low, high", [
    (0, 10, 0.0, 1 - 0.025 ** (1 / 10)),  # closed form at the ends: 0.3085
    (10, 10, 0.025 ** (1 / 10), 1.0),  # 0.6915
    (45, 50, 0.7818646, 0.9667249),  # R: binom.test(45, 50)$conf.int
    (5, 20, 0.0865715, 0.4910459),  # R: binom.test(5, 20)$conf.int
])
def test_clopper_pearson_matches_known_intervals(successes, n, low, high):
    assert clopper_pearson(successes, n) == pytest.approx((low, high), abs=2e-7)


def test_one_sided_lower_bound_of_all_caught_is_alpha_root():
    # P(all n caught | p) = p^n = 0.05 at the bound.
    for n in (1, 20, 59, 200):
        assert lower_bound(n, n) == pytest.approx(0.05 ** (1 / n), abs=1e-9)
    assert lower_bound(0, 30) == 0.0


# --- the site-threshold rule -----------------------------------------------------------------------

def binomial_at_most(m: int, n: int, p: float) -> float:
    return sum(math.comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(m + 1))


def test_allowed_misses_is_the_order_statistic_rule():
    assert positives_needed(0.95) == 59  # 0.95^58 > 0.05 >= 0.95^59
    assert allowed_misses(58, 0.95) is None and allowed_misses(59, 0.95) == 0
    for n in (59, 93, 100, 200, 400):
        m = allowed_misses(n, 0.95)
        assert binomial_at_most(m, n, 0.05) <= 0.05 < binomial_at_most(m + 1, n, 0.05), n
        # The same as the Clopper-Pearson lower bound at n - m caught reaching the target, not at n - m - 1.
        assert lower_bound(n - m, n) >= 0.95 > lower_bound(n - m - 1, n), n


def constructed(n_positives: int, n_negatives: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    positives = rng.uniform(0.3, 1.0, n_positives)
    negatives = rng.uniform(0.0, 0.6, n_negatives)
    truths = np.r_[np.ones(n_positives, bool), np.zeros(n_negatives, bool)]
    return truths, np.r_[positives, negatives], np.sort(positives)


def test_a_shortfall_lowers_the_threshold_no_further_than_the_bound_allows():
    truths, probabilities, positives = constructed(60)  # 60 positives: none may be missed
    choice = choose_site_threshold(truths, probabilities, validated_threshold=0.5)  # misses about 30 %
    assert choice.decision == "lowered" and choice.upper_bound_at_validated < 0.95
    assert choice.supported and choice.allowed_misses == 0
    assert positives[0] >= choice.threshold > probabilities[probabilities < positives[0]].max()
    assert choice.sensitivity_lower_bound >= 0.95 and "lowered" in choice.rule

    truths, probabilities, positives = constructed(200, seed=1)  # 200 positives: 4 may be missed
    choice = choose_site_threshold(truths, probabilities, validated_threshold=0.5)
    assert choice.decision == "lowered" and choice.allowed_misses == 4
    assert positives[3] < choice.threshold <= positives[4]
    assert np.sum(positives < choice.threshold) == 4 and choice.sensitivity_lower_bound >= 0.95


def test_the_threshold_rises_only_when_the_evidence_supports_the_target_there():
    truths, probabilities, positives = constructed(80, seed=2)
    choice = choose_site_threshold(truths, probabilities, validated_threshold=0.05)
    assert choice.decision == "raised" and choice.threshold > 0.05 and choice.sensitivity_lower_bound >= 0.95


def test_without_evidence_either_way_the_validated_threshold_stays_and_says_what_would_decide():
    truths, probabilities, positives = constructed(62, seed=4)
    validated = float(positives[1])  # misses one of 62: no shortfall shown, the target not shown either
    choice = choose_site_threshold(truths, probabilities, validated_threshold=validated)
    assert choice.decision == "kept" and choice.threshold == validated
    assert choice.caught_at_validated == 61 and choice.upper_bound_at_validated >= 0.95
    more = choice.more_positives_needed
    assert more > 0 and f"{more} more PNEUMONIA" in choice.rule
    # The count is exact: that many more, all found, show the target; one fewer does not.
    assert lower_bound(61 + more, 62 + more) >= 0.95 > lower_bound(61 + more - 1, 62 + more - 1)
    # The old rule would have dropped it under the lowest positive: here nothing moves.
    assert choice.threshold > positives[0]


def test_too_few_positives_lower_only_on_a_shortfall_and_then_miss_none():
    truths, probabilities, positives = constructed(58, seed=3)
    kept = choose_site_threshold(truths, probabilities, validated_threshold=0.05)  # every positive found
    assert kept.decision == "kept" and kept.threshold == 0.05 and not kept.supported
    assert kept.allowed_misses is None and kept.more_positives_needed == 59 - 58 + 0  # 59 needed in all
    for validated in (0.5, 0.9):  # shortfalls too large for 58 positives to leave in doubt
        choice = choose_site_threshold(truths, probabilities, validated_threshold=validated)
        assert choice.decision == "lowered" and not choice.supported
        assert positives[0] > choice.threshold and np.sum(positives < choice.threshold) == 0
        assert "lowest-scored" in choice.rule and "59" in choice.rule


# --- the command on real images --------------------------------------------------------------------

def model_copy(source: Path, folder: Path) -> Path:
    shutil.copy(source, folder / source.name)
    shutil.copy(metadata_path(source), metadata_path(folder / source.name))
    return folder / source.name


@pytest.fixture(scope="module", params=["int8.tflite", "int8.onnx"])
def model(request, tiny_run, tmp_path_factory) -> Path:
    """A copy of one of the tiny run's int8 models (TFLite, then ONNX), alone in its folder."""
    return model_copy(edge_artifacts(tiny_run)[request.param], tmp_path_factory.mktemp("commission_model"))


@pytest.fixture(scope="module")
def site(data_root, tmp_path_factory) -> Path:
    """A clinic's labelled films: real test/ X-rays, 62 PNEUMONIA (enough for the rule) and 12 NORMAL,
    plus one film that is not a chest X-ray and one file that does not decode."""
    root = tmp_path_factory.mktemp("site") / "clinic-a"
    for label, count in (("NORMAL", 12), ("PNEUMONIA", 62)):
        (root / label).mkdir(parents=True)
        for path in sorted((data_root / "test" / label).iterdir())[:count]:
            shutil.copy(path, root / label / path.name)
    Image.new("L", (800, 600), 255).save(root / "NORMAL" / "blank-page.png")
    (root / "PNEUMONIA" / "broken.jpeg").write_bytes(b"not a jpeg")
    return root



def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_commission_writes_a_new_model_and_leaves_the_original_alone(model, site, monkeypatch, capsys):
    before = {path: digest(path) for path in (model, metadata_path(model))}
    validated = read_metadata(model).threshold
    report = site.parent / f"record{model.suffix}.json"
    code, _, err = run_cli(monkeypatch, capsys, "commission", model, site, "--json", report)
    assert code == 1, err  # the new model is written, but broken.jpeg was skipped: exit 1 as predict does
    assert {path: digest(path) for path in before} == before

    new = model.with_name(f"model_int8.site-clinic-a{model.suffix}")
    assert new.read_bytes() == model.read_bytes()
    metadata = read_metadata(new)  # verifies the new metadata's sha256 against the copy
    assert metadata.sha256 == sha256_file(new) and metadata.model_file == new.name
    record = metadata.commissioning
    assert record["site"] == "clinic-a" and record["source_sha256"] == before[model]
    assert record["images"] == {"NORMAL": 12, "PNEUMONIA": 62}
    assert record["refused"] == {"NORMAL": 1} and record["skipped"] == 1
    assert record["previous_threshold"] == validated and record["at_previous_threshold"]["threshold"] == validated
    evidence = record["evidence"]
    assert evidence["supported"] and evidence["allowed_misses"] == 0
    at_site = record["at_site_threshold"]
    assert metadata.threshold == record["threshold"] == at_site["threshold"]
    # The decision follows the evidence at the validated threshold (this tiny model's scores decide which).
    assert record["at_previous_threshold"]["sensitivity"]["successes"] == evidence["caught_at_validated"]
    if evidence["upper_bound_at_validated"] < 0.95:
        assert evidence["decision"] == "lowered" and at_site["sensitivity"]["successes"] == 62  # none of 62 missed
    elif evidence["decision"] == "kept":
        assert record["threshold"] == validated and evidence["more_positives_needed"] >= 0
    else:
        assert evidence["decision"] == "raised" and record["threshold"] > validated
    low, high = at_site["specificity"]["ci95"]
    assert low <= at_site["specificity"]["value"] <= high
    assert "not a chest X-ray" in err and "blank-page.png" in err and "broken.jpeg" in err
    assert evidence["decision"] in err and "commissioned model written" in err
    assert record["renormalised"] is False and "renormalisation" not in record
    written = json.loads(report.read_text())
    assert written["model"] == str(new) and written["commissioning"] == record
    assert [item["path"].endswith("broken.jpeg") for item in written["skipped"]] == [True]
    assert [item["class"] for item in written["refused"]] == ["NORMAL"]

    # predict with the new model uses the site threshold and says whose it is.
    code, out, err = run_cli(monkeypatch, capsys, "predict", new, site / "PNEUMONIA", "--json",
                             "--summary", site.parent / "summary.json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert {row["threshold"] for row in rows} == {metadata.threshold}
    found = sum(row["label"] == "PNEUMONIA" for row in rows if row["probability"] is not None)
    assert found == at_site["sensitivity"]["successes"]  # what the record promised at the site threshold
    assert "commissioned for site clinic-a" in err
    summary = json.loads((site.parent / "summary.json").read_text())
    assert summary["commissioning"]["site"] == "clinic-a"
    assert summary["commissioning"]["threshold"] == metadata.threshold

    code, out, err = run_cli(monkeypatch, capsys, "doctor", new)
    assert code == 0 and "commissioned: for site clinic-a" in " ".join(err.split())
    code, out, err = run_cli(monkeypatch, capsys, "doctor", model)
    assert "commissioned: no" in err

    # Commissioning the commissioned model for another site names it after that site alone.
    code, _, err = run_cli(monkeypatch, capsys, "commission", new, site, "--site", "clinic-b")
    assert code == 1, err
    again = model.with_name(f"model_int8.site-clinic-b{model.suffix}")
    assert again.is_file() and read_metadata(again).commissioning["source_model"] == new.name
    assert not list(model.parent.glob("*.site-clinic-a.site-*"))
    # ... and for its own site again would overwrite itself: refused, with the way out.
    code, _, err = run_cli(monkeypatch, capsys, "commission", new, site)
    one_line_error(code, err, "give another --out")


def test_too_few_pneumonia_films_keep_the_validated_threshold(model, tiny_kaggle, tmp_path, monkeypatch, capsys):
    out = tmp_path / f"few{model.suffix}"
    code, _, err = run_cli(monkeypatch, capsys, "commission", model, tiny_kaggle / "test", "--site", "small",
                           "--out", out)
    assert code == 0, err
    metadata = read_metadata(out)
    assert metadata.threshold == read_metadata(model).threshold
    assert not metadata.commissioning["evidence"]["supported"]
    assert "kept the validated threshold" in " ".join(err.split())


def one_line_error(code: int, err: str, expected: str) -> None:
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert expected in err, err


def test_bad_input_is_one_line_and_nothing_is_written(model, site, tmp_path, monkeypatch, capsys):
    no_class = tmp_path / "no_class"
    shutil.copytree(site / "NORMAL", no_class / "NORMAL")
    code, _, err = run_cli(monkeypatch, capsys, "commission", model, no_class, "--out", tmp_path / f"a{model.suffix}")
    one_line_error(code, err, "no PNEUMONIA subfolder")

    empty = tmp_path / "empty"
    shutil.copytree(site / "NORMAL", empty / "NORMAL")
    (empty / "PNEUMONIA").mkdir()
    code, _, err = run_cli(monkeypatch, capsys, "commission", model, empty, "--out", tmp_path / f"b{model.suffix}")
    one_line_error(code, err, "contains no images")

    not_a_model = tmp_path / "notes.tflite"
    not_a_model.write_text("not a model")
    code, _, err = run_cli(monkeypatch, capsys, "commission", not_a_model, site, "--out", tmp_path / "c.tflite")
    one_line_error(code, err, "no metadata")

    code, _, err = run_cli(monkeypatch, capsys, "commission", model, site, "--site", "a b")
    one_line_error(code, err, "site name")
    code, _, err = run_cli(monkeypatch, capsys, "commission", model, site, "--out", model)
    one_line_error(code, err, "never changes the original")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "no_class", "notes.tflite"]
