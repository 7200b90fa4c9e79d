"""`ppvi train reid --config FILE`: a run replayed from its run.json, or set from YAML; flags win."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ppvi_cli.cli.app import app
from ppvi_cli.data.synth import SynthConfig, synthesize
from ppvi_cli.errors import PPVIError
from ppvi_cli.models.checkpoint import load_checkpoint
from ppvi_cli.train.config_file import read_config
from ppvi_cli.train.reid.trainer import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = ["--backbone", "mobilenetv2", "--pretrained", "none", "-P", "3", "-K", "2", "--size", "64x32", "--epochs", "1"]


def test_yaml_keys_are_the_run_json_names_converted_to_their_types(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: /d\npepr-lambdas: [1, 0.1, 0.01]\ninput_size: 64x32\nlr: 1e-3\nepochs: 3\n"
                    "dual_stream: null\nsplits: [train]\n")
    values = read_config(path, TrainConfig, exclude=("resume",))
    assert values == {"data": Path("/d"), "pepr_lambdas": (1.0, 0.1, 0.01), "input_size": (64, 32), "lr": 0.001,
                      "epochs": 3, "dual_stream": None, "splits": ("train",)}
    assert type(values["epochs"]) is int and type(values["pepr_lambdas"][0]) is float


@pytest.mark.parametrize("text, message", [
    ("epoch: 3\n", "unknown key 'epoch'; did you mean 'epochs'?"),
    ("resume: true\n", "unknown key 'resume'"),
    ("epochs: 2.5\n", "epochs must be an integer, got 2.5"),
    ("lr: fast\n", "lr must be a number, got 'fast'"),
    ("augment: 1\n", "augment must be true or false"),
    ("input_size: [64]\n", "input_size must have 2 values"),
    ("data: null\n", "data may not be empty"),
    ("- a\n- b\n", "expected a mapping"),
    ("epochs: [\n", "not YAML or JSON"),
])
def test_bad_config_files_fail_in_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PPVIError, match=message.replace("?", r"\?").replace("[", r"\[")):
        read_config(path, TrainConfig, exclude=("resume",))


def _captured_config(monkeypatch, args: list[str]) -> TrainConfig:
    """The TrainConfig `ppvi train reid ARGS` would train with (the training itself replaced)."""
    import ppvi_cli.train.reid.trainer as trainer

    seen = []

    def fake_train(config, on_progress=None):
        seen.append(config)
        raise SystemExit(0)

    monkeypatch.setattr(trainer, "train_reid", functools.wraps(trainer.train_reid)(fake_train))
    result = CliRunner().invoke(app, args)
    assert seen, result.output + repr(result.exception)
    return seen[0]


def test_flags_override_the_file_and_the_file_the_defaults(tmp_path, monkeypatch):
    path = tmp_path / "cfg.yaml"
    path.write_text("data: /d\nout: /o\nepochs: 7\nbackbone: resnet18\nseed: 4\ndevice: cpu\nweight_decay: 0.01\n")
    plain = _captured_config(monkeypatch, ["train", "reid", "--config", str(path)])
    assert (plain.epochs, plain.backbone, plain.seed, plain.weight_decay, plain.p) == (7, "resnet18", 4, 0.01, 8)
    varied = _captured_config(monkeypatch, ["--seed", "9", "train", "reid", "-c", str(path), "--epochs", "2",
                                            "--out", "/o2", "--size", "128x64"])
    assert (varied.epochs, varied.out, varied.input_size, varied.seed) == (2, Path("/o2"), (128, 64), 9)
    assert varied.backbone == "resnet18" and varied.weight_decay == 0.01
    own_seed = _captured_config(monkeypatch, ["--seed", "9", "train", "reid", "-c", str(path), "--seed", "1"])
    assert own_seed.seed == 1  # the command's own flag beats the global one


def test_cli_defaults_are_the_config_defaults(monkeypatch):
    """Without --config the flags left out take TrainConfig's defaults, which --help shows."""
    config = _captured_config(monkeypatch, ["train", "reid", "--data", "/d", "--out", "/o"])
    assert config == TrainConfig(data=Path("/d"), out=Path("/o"))
    missing = CliRunner().invoke(app, ["train", "reid", "--out", "/o"])
    assert isinstance(missing.exception, PPVIError) and "--data missing" in str(missing.exception)


def test_run_json_replays_the_run_and_flags_vary_it(tmp_path):
    synth = tmp_path / "synth"
    synthesize(synth, SynthConfig(ids=14, images_per_camera=2, height=64, width=32, seed=1))
    runner = CliRunner()
    first = runner.invoke(app, ["-q", "train", "reid", "--data", str(synth), "--out", str(tmp_path / "a"), *TINY,
                                "--seed", "3", "--lr", "0.002", "--device", "cpu"])
    assert first.exit_code == 0, first.output
    replay = runner.invoke(app, ["-q", "train", "reid", "--config", str(tmp_path / "a" / "run.json"),
                                 "--out", str(tmp_path / "b")])
    assert replay.exit_code == 0, replay.output
    a, b = (json.loads((tmp_path / name / "run.json").read_text())["params"] for name in "ab")
    assert {k: v for k, v in a.items() if k != "out"} == {k: v for k, v in b.items() if k != "out"}
    assert a["seed"] == 3 and a["lr"] == 0.002
    weights = [load_checkpoint(tmp_path / name / "last.pt")[2]["sha256"] for name in "ab"]
    assert weights[0] == weights[1]  # the same run, bit for bit
    again = runner.invoke(app, ["-q", "train", "reid", "--config", str(tmp_path / "a" / "run.json")])
    assert "already holds a training run" in str(again.exception)  # its own --out: a replay needs a new one
