"""The conventions a user of typer-based tools expects: grouped help, examples, choices, completion,
`-h`, global options from the environment."""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from conftest import tiny_features
from ppvi_cli.cli import choices
from ppvi_cli.cli.app import app
from ppvi_cli.cli.examples import EXAMPLES, PANELS

WIDE = {"COLUMNS": "250", "TERMINAL_WIDTH": "250"}


def _command_paths() -> list[str]:
    paths = [info.name for info in app.registered_commands]
    for group in app.registered_groups:
        paths.append(group.name)
        paths += [f"{group.name} {info.name}" for info in group.typer_instance.registered_commands]
    return paths


def test_every_command_has_a_panel_and_examples():
    commands = _command_paths()
    assert set(EXAMPLES) == {"", *commands}
    assert set(PANELS) == {path for path in commands if " " not in path}
    assert set(PANELS.values()) == {"Protect", "Attack", "Measure", "Train", "Data"}


def test_root_help_groups_the_commands_and_h_works():
    result = CliRunner().invoke(app, ["-h"], env=WIDE)
    assert result.exit_code == 0
    panels = [line for line in result.output.splitlines() if line.startswith("╭─ ")]
    names = [line.split()[1] for line in panels]
    assert names == ["Options", "Protect", "Attack", "Measure", "Train", "Data"]
    for env in ("PPVI_DEVICE", "PPVI_SEED", "PPVI_QUIET"):
        assert f"env var: {env}" in result.output
    assert "--install-completion" in result.output and "--show-completion" in result.output


@pytest.mark.parametrize("path", sorted(set(EXAMPLES)))
def test_help_ends_with_its_examples(path):
    result = CliRunner().invoke(app, [*path.split(), "-h"], env=WIDE)
    assert result.exit_code == 0, result.output
    tail = [line.strip().removeprefix("• ") for line in result.output.splitlines() if line.strip()]
    examples = EXAMPLES[path]
    assert tail[-len(examples) - 1:] == ["Examples", *examples]


def _record_calls(monkeypatch) -> list[str]:
    """Replace every command's function by one with its signature that only records its name."""
    called = []

    def stub(info, name):
        @functools.wraps(info.callback)
        def record(*args, **kwargs):
            called.append(name)

        monkeypatch.setattr(info, "callback", record)

    for info in app.registered_commands:
        stub(info, info.name)
    for group in app.registered_groups:
        for info in group.typer_instance.registered_commands:
            stub(info, f"{group.name} {info.name}")
    return called


def test_every_example_parses(monkeypatch):
    """Each example's options and choice values are the command's: it would run as shown."""
    called = _record_calls(monkeypatch)
    runner = CliRunner()
    for path, lines in EXAMPLES.items():
        for line in lines:
            for part in line.split("&&"):
                words = shlex.split(part)
                env = {}
                while "=" in words[0]:
                    key, value = words.pop(0).split("=", 1)
                    env[key] = value
                assert words[0] == "ppvi", line
                result = runner.invoke(app, words[1:], env=env)
                assert result.exit_code == 0, f"{line}: {result.output}"
                assert called.pop() in " ".join(words), line  # the command the example names ran


def test_choices_come_from_the_registries():
    from ppvi_cli.anonymize.methods import load_methods
    from ppvi_cli.data.readers import FORMATS
    from ppvi_cli.metrics.features import SETTINGS
    from ppvi_cli.metrics.protocols import protocols
    from ppvi_cli.metrics.scorers import BACKENDS
    from ppvi_cli.models.backbones import BACKBONES

    assert choices.names_of(choices.Method) == load_methods()
    assert choices.names_of(choices.Format) == ["auto", *FORMATS.names()]
    assert choices.names_of(choices.Protocol) == protocols.names()
    assert choices.names_of(choices.Setting) == list(SETTINGS)
    assert choices.names_of(choices.SettingOrAll) == [*SETTINGS, "all"]
    assert choices.names_of(choices.Backbone) == BACKBONES.names()
    assert choices.names_of(choices.Backend) == list(BACKENDS)


def test_choices_are_shown_checked_and_plain_strings(monkeypatch):
    result = CliRunner().invoke(app, ["eval", "-h"], env=WIDE)
    assert "<market|regdb-t2v|regdb-v2t|sysu-all|sysu-indoor>" in result.output
    assert "<raw2raw|raw2anon|anon2raw|anon2anon|all>" in result.output
    bad = CliRunner().invoke(app, ["eval", "--features", "f.npz", "-p", "sysu", "-s", "all"], env=WIDE)
    assert bad.exit_code == 2 and "'sysu' is not one of" in bad.output
    seen = {}

    def record(**kwargs):
        seen.update(kwargs)

    info = next(i for i in app.registered_commands if i.name == "anonymize")
    monkeypatch.setattr(info, "callback", functools.wraps(info.callback)(record))
    assert CliRunner().invoke(app, ["anonymize", "-m", "blur", "-i", "a", "-o", "b"]).exit_code == 0
    assert type(seen["method"]) is str and seen["method"] == "blur"
    assert type(seen["fmt_name"]) is str and seen["fmt_name"] == "auto"


def test_startup_imports_no_registry_of_torch_models():
    """Choices are read when listed: `ppvi chaos` must not pay for torch (the backbones' registry)."""
    code = ("import sys; from typer.main import get_command; from ppvi_cli.cli.app import app; get_command(app); "
            "print('torch' in sys.modules, 'ppvi_cli.metrics.protocols' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_help_defaults_are_the_config_defaults():
    """The defaults help texts show are read from the config dataclasses' source (the CLI must not
    import torch to print them): each one read, imported for real, is the dataclass's default."""
    import dataclasses
    import importlib

    from ppvi_cli.cli import options

    used = [(made, field) for made in options.ConfigDefaults.made for field in sorted(made.used)]
    assert len(used) >= 30  # the app is built (conftest or the import above), so every help text read its defaults
    for made, field in used:
        cls = getattr(importlib.import_module(made.module), made.name)
        real = {f.name: f.default for f in dataclasses.fields(cls)}
        assert made[field] == real[field], f"{made.name}.{field}"
    assert options.CONSTANTS_READ
    for module, name in options.CONSTANTS_READ:
        assert options.module_constant(module, name) == getattr(importlib.import_module(module), name), name
    assert options.show(3.5e-4) == "3.5e-4" and options.show(0.002) == "0.002" and options.show(12.0) == "12"
    assert options.show((256, 128)) == "256x128" and options.show(False) == "off"


def test_shared_options_are_declared_once():
    """--device, --seed and --format come from cli/options.py's factories in every command."""
    from pathlib import Path

    import ppvi_cli.cli

    for path in Path(ppvi_cli.cli.__file__).parent.glob("*.py"):
        if path.name != "options.py":
            text = path.read_text()
            for flag in ('"--device",', '"--seed",', '"--format",', "[default:"):
                assert flag not in text, f"{path.name} declares {flag} itself: use cli/options.py"


def _complete(words: str) -> list[str]:
    env = {**os.environ, "_PPVI_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    proc = subprocess.run([sys.executable, "-m", "ppvi_cli"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_shell_completion_of_commands_and_choices():
    assert _complete("ppvi eval --protocol sy") == ["sysu-all", "sysu-indoor"]
    assert _complete("ppvi anonymize --method ") == ["blur", "generator", "mosaic", "noise", "pixelfade"]
    assert _complete("ppvi tra") == ["train"]
    assert _complete("ppvi train reid --backbone mob") == ["mobilenetv2"]
    # The shell named, not detected: detection reads the parent processes, which differ between a
    # terminal, make and CI (typer's own switch for that).
    script = subprocess.run([sys.executable, "-m", "ppvi_cli", "--show-completion", "bash"], capture_output=True,
                            text=True, env={**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert script.returncode == 0, script.stderr
    assert "_PPVI_COMPLETE=complete_bash" in script.stdout and "complete -o default -F _ppvi_completion ppvi" \
        in script.stdout


def test_global_options_from_the_environment(tmp_path):
    import json

    def ppvi(*args, **env):
        return subprocess.run([sys.executable, "-m", "ppvi_cli", *args], capture_output=True, text=True,
                              env={**os.environ, **env})

    synth = ["data", "synth", "--ids", "4", "--images-per-camera", "1", "--height", "32", "--width", "16"]
    from_env = ppvi("--json", "--quiet", *synth, str(tmp_path / "a"), PPVI_SEED="7")
    assert from_env.returncode == 0, from_env.stderr
    assert json.loads(from_env.stdout)["config"]["seed"] == 7
    from_flag = ppvi("--json", "--quiet", "--seed", "3", *synth, str(tmp_path / "b"), PPVI_SEED="7")
    assert json.loads(from_flag.stdout)["config"]["seed"] == 3  # the command line wins
    feats = str(tiny_features(tmp_path / "f.npz"))
    evaluate = ["eval", "--features", feats, "-p", "market", "-s", "raw2raw"]
    no_gpu = ppvi(*evaluate, PPVI_DEVICE="cuda:7")
    assert no_gpu.returncode == 2 and "--device cuda:7 is not available" in no_gpu.stderr
    assert ppvi("--device", "cpu", *evaluate, PPVI_DEVICE="cuda:7").returncode == 0
