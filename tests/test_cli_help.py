"""The CLI in an 80-column terminal (a Raspberry Pi over SSH): whole option names, real choices.

Every `--help` is rendered in a fresh process, as a user sees it; the choice lists the CLI keeps for a
fast start-up are checked against the registries they mirror, and the values reaching training,
conversion and the benchmark are the same plain strings as before they became choices.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

from edgecxr.benchmarks.command import Device
from edgecxr.cli import app
from edgecxr.convert.command import BiasCorrection, Format, Quantize
from edgecxr.train.command import Arch, Distribute, Equalize, Strategy
from edgecxr.edge_runtime.python_command import ISOLATED_PYTHON

REPO = Path(__file__).resolve().parents[1]
COLUMNS = 80
COMMANDS = ["", "train", "evaluate", "convert", "predict", "commission", "doctor", "bench", "serve", "bundle"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# A choice list as typer shows it, <a|b|c>, that breaks off before its closing '>' (folded mid-word).
CHOICE_LIST_CUT = re.compile(r"<[\w.-]+(?:\|[\w.-]*)+(?=\s|$)", re.M)
# Every choice must appear whole in its command's help (not folded mid-word into two lines).
CHOICES = {"train": (Arch, Strategy, Equalize, Distribute), "convert": (Quantize, Format, BiasCorrection), "bench": (Device,)}


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TERMINAL_WIDTH", "LINES")}
    env.update(COLUMNS=str(COLUMNS), TERM="xterm")  # rich sizes its output from COLUMNS
    code = "import sys; sys.argv[0] = 'edgecxr'; from edgecxr.cli import main; main()"
    return subprocess.run([*ISOLATED_PYTHON, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c or "edgecxr")
def test_help_fits_80_columns_without_cutting_anything(command):
    result = cli(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    text = ANSI.sub("", result.stdout)
    assert "Usage: edgecxr" in text
    assert "…" not in text, f"something was cut short:\n{text}"
    too_wide = [line for line in text.splitlines() if cell_len(line) > COLUMNS]
    assert not too_wide, f"{len(too_wide)} line(s) wider than {COLUMNS} columns:\n" + "\n".join(too_wide)
    folded = CHOICE_LIST_CUT.findall(text)
    assert not folded, f"choice list(s) folded onto the next line: {folded}\n{text}"
    for choice_type in CHOICES.get(command, ()):
        for choice in choice_type:
            assert re.search(rf"(?<![\w-]){re.escape(choice.value)}(?![\w])", text), (
                f"{choice.value!r} is not shown whole in `edgecxr {command} --help`:\n{text}")


def test_a_bogus_arch_is_refused_with_the_choices():
    result = cli("train", "--arch", "bogus")
    assert result.returncode == 2
    message = " ".join(ANSI.sub("", result.stderr).replace("│", " ").split())
    assert "'bogus'" in message and "--arch" in message
    for arch in Arch:
        assert f"'{arch.value}'" in message, message
    assert "Traceback" not in result.stderr


def test_a_bogus_quantization_is_refused_with_the_choices():
    result = cli("convert", "some-run", "--quantize", "int8,fp16")
    assert result.returncode == 2
    message = " ".join(ANSI.sub("", result.stderr).replace("│", " ").split())
    assert "--quantize" in message and all(f"'{q.value}'" in message for q in Quantize), message


def test_the_choices_match_the_registries_they_mirror():
    from edgecxr.benchmarks.devices import DEVICES
    from edgecxr.convert.bias_correction import MODES
    from edgecxr.convert.plan import FORMAT_CHOICES, QUANTIZE_CHOICES
    from edgecxr.edge_runtime.preprocessing import EQUALIZE_MODES
    from edgecxr.train.distributed.strategy import MODES as DISTRIBUTE_MODES
    from edgecxr.train.model_specs import MODEL_SPECS
    from edgecxr.train.transfer_training import STRATEGIES

    assert [a.value for a in Arch] == list(MODEL_SPECS)
    assert {s.value for s in Strategy} == set(STRATEGIES)
    assert {e.value for e in Equalize} == set(EQUALIZE_MODES)
    assert [d.value for d in Distribute] == list(DISTRIBUTE_MODES)
    assert {b.value for b in BiasCorrection} == set(MODES)
    assert [q.value for q in Quantize] == list(QUANTIZE_CHOICES)
    assert [f.value for f in Format] == list(FORMAT_CHOICES)
    assert [d.value for d in Device] == list(DEVICES)


class Reached(Exception):
    """Raised by a stand-in for the real work, once the CLI has handed over its values."""


def fake_module(monkeypatch, name: str, **attributes) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    monkeypatch.setitem(sys.modules, name, module)


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert isinstance(result.exception, Reached), result.output
    return result.exception.args[0]


def test_train_hands_plain_strings_downstream(monkeypatch, tiny_kaggle):
    def train(config):
        raise Reached(config)

    fake_module(monkeypatch, "edgecxr.train.trainer", train=train)
    config = invoke("train", "--data", str(tiny_kaggle), "--arch", "mobilenet_v2", "--strategy", "feature-extract",
                    "--equalize", "none", "--zoom", "0.2", "--distribute", "multi-worker")
    assert (config.arch, config.strategy, config.equalize) == ("mobilenet_v2", "feature-extract", "none")
    assert all(type(v) is str for v in (config.arch, config.strategy, config.equalize, config.distribute))
    assert config.distribute == "multi-worker"
    assert config.out.name.startswith("mobilenet_v2-")
    assert config.augment.zoom == 0.2
    defaults = invoke("train", "--data", str(tiny_kaggle))
    assert (defaults.arch, defaults.strategy, defaults.equalize) == ("compact", "fine-tune", "histogram")
    assert defaults.distribute == "none"
    assert all(type(v) is str for v in (defaults.arch, defaults.strategy, defaults.equalize))


def test_zoom_out_of_range_is_refused(tmp_path):
    # A missing data folder: should the range check ever go, this fails at once instead of training.
    result = CliRunner().invoke(app, ["train", "--zoom", "0.7", "--data", str(tmp_path / "none")])
    assert result.exit_code == 2 and "0.7 is not in the range 0.0<=x<=0.5" in result.output


def test_convert_hands_plain_strings_downstream(monkeypatch, tmp_path):
    def options(**kwargs):
        raise Reached(kwargs)

    fake_module(monkeypatch, "edgecxr.convert.exporter", ConvertOptions=options, convert_run=None,
                failure_message=None)
    kwargs = invoke("convert", str(tmp_path), "--quantize", "fp16", "--format", "tflite", "--bias-correction", "off")
    assert (kwargs["quantize"], kwargs["format"], kwargs["bias_correction"]) == ("fp16", "tflite", "off")
    kwargs = invoke("convert", str(tmp_path))
    assert (kwargs["quantize"], kwargs["format"], kwargs["bias_correction"]) == ("int8", "all", "layers")
    assert all(type(kwargs[k]) is str for k in ("quantize", "format", "bias_correction"))


def test_bench_hands_a_plain_device_string_downstream(monkeypatch, tiny_kaggle, tmp_path):
    def config(**kwargs):
        raise Reached(kwargs)

    fake_module(monkeypatch, "edgecxr.benchmarks.bench", BenchConfig=config, run_bench=None)
    kwargs = invoke("bench", str(tmp_path), "--data", str(tiny_kaggle), "--device", "CPU")
    assert kwargs["device"] == "cpu" and type(kwargs["device"]) is str


def test_framing_and_gamma_options_reach_the_config(monkeypatch, tiny_kaggle):
    def train(config):
        raise Reached(config)

    fake_module(monkeypatch, "edgecxr.train.trainer", train=train)
    config = invoke("train", "--data", str(tiny_kaggle), "--frame-area", "0.65", "--frame-aspect", "0.29",
                    "--gamma", "0.35")
    assert (config.augment.frame_area, config.augment.frame_aspect, config.augment.gamma) == (0.65, 0.29, 0.35)
    defaults = invoke("train", "--data", str(tiny_kaggle))
    assert (defaults.augment.frame_area, defaults.augment.frame_aspect, defaults.augment.gamma) == (0, 0, 0)
    assert invoke("train", "--data", str(tiny_kaggle), "--no-augment", "--gamma", "0.3").augment.enabled is False


def test_framing_area_out_of_range_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["train", "--frame-area", "0.95", "--data", str(tmp_path / "none")])
    assert result.exit_code == 2 and "0.95 is not in the range 0.0<=x<=0.9" in result.output


def test_the_command_list_shows_one_line_per_command():
    text = ANSI.sub("", cli("--help").stdout)
    panel = text[text.index("Commands"):]
    rows = [line for line in panel.splitlines() if line.startswith("│ ")]
    names = [row.split()[1] for row in rows]
    assert names == ["train", "evaluate", "convert", "predict", "commission", "doctor", "serve", "bench", "bundle"], rows

