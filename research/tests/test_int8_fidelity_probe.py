"""The int8 fidelity probe really keeps the named layers in float and measures on validation."""

from research.int8_fidelity_probe import probe


def test_named_layers_stay_float_and_rows_cover_the_validation_split(tiny_run):
    import json

    rows = probe(tiny_run, ["block1_conv1", "block1_,block2_"], calibration_size=16)
    n_validation = len(json.loads((tiny_run / "split.json").read_text())["validation"])
    assert [row["variant"] for row in rows] == ["all int8", "float block1_conv1", "float block1_+block2_"]
    assert rows[0]["float_tensors"] == 0
    assert 0 < rows[1]["float_tensors"] < rows[2]["float_tensors"]
    assert all(row["n_images"] == n_validation for row in rows)
    # Every variant still tracks the Keras model: the probe compares like with like.
    assert all(row["mean_abs_diff"] < 0.1 for row in rows)
