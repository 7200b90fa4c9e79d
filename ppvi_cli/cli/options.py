"""The options many commands share, declared once, and the defaults their help shows, read from the
config dataclasses that own them.

Each factory returns a fresh `typer.Option` (one per command signature): `device_option()` and
`seed_option()` are a command's own override of the global `--device` / `--seed`, `format_option()`
the dataset layout. A help text never types out a default value: `ConfigDefaults` reads it from the
dataclass (`AttackConfig`, `PixelFade`, ...) so the help cannot drift from what a run does.

The config modules import torch, and `ppvi --help` (or `ppvi chaos`) must not: so the defaults are
read from the dataclass's source with `ast` (literals, module constants, one `from ... import`
hop, base classes), never by importing it. tests/test_cli_conventions.py checks every default read
this way against the imported dataclass.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any

import typer

from ppvi_cli.cli.choices import choice_option
from ppvi_cli.cli.common import GlobalOptions
from ppvi_cli.device import DEVICE_HELP
from ppvi_cli.validate import format_size

_PACKAGE = Path(__file__).resolve().parent.parent  # ppvi_cli/

# --- the defaults, from the dataclasses --------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _module_ast(module: str) -> ast.Module:
    if not module.startswith("ppvi_cli."):
        raise ValueError(f"defaults are read from ppvi_cli's own modules, not {module!r}")
    path = _PACKAGE.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imported(module: str, name: str) -> str | None:
    """The module `name` is imported from in `module` (`from ppvi_cli.x import name`), if it is."""
    for node in _module_ast(module).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return node.module
    return None


def _original_name(module: str, name: str) -> str:
    for node in _module_ast(module).body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.asname == name:
                    return alias.name
    return name


def _value(module: str, node: ast.expr) -> Any:
    """A literal, or a module-level constant (here or imported from another ppvi_cli module)."""
    if isinstance(node, ast.Name):
        return _constant(module, node.id)
    return ast.literal_eval(node)


CONSTANTS_READ: set[tuple[str, str]] = set()  # (module, name) a help text used, for the test


def module_constant(module: str, name: str) -> Any:
    """The value of the module-level constant `name` of `module` (e.g. "ppvi_cli.anonymize.pixelfade",
    "AUTO_EPS"), read from its source."""
    CONSTANTS_READ.add((module, name))
    return _constant(module, name)


@functools.lru_cache(maxsize=None)
def _constant(module: str, name: str) -> Any:
    for node in _module_ast(module).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, ast.AnnAssign) and node.value is not None else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return _value(module, node.value)
    source = _imported(module, name)
    if source is not None:
        return _constant(source, _original_name(module, name))
    raise LookupError(f"{module} has no constant {name!r} that ppvi can read without importing it")


@functools.lru_cache(maxsize=None)
def _class_defaults(module: str, name: str) -> dict[str, Any]:
    """Field name -> default of the dataclass `name` in `module`, its bases' fields first."""
    for node in _module_ast(module).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            break
    else:
        source = _imported(module, name)
        if source is None:
            raise LookupError(f"{module} has no class {name!r}")
        return _class_defaults(source, _original_name(module, name))
    fields: dict[str, Any] = {}
    for base in node.bases:
        if isinstance(base, ast.Name):
            try:
                fields.update(_class_defaults(module, base.id))
            except LookupError:
                pass  # a base ppvi does not define (or one without readable fields)
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None \
                and "ClassVar" not in ast.unparse(item.annotation):  # a class constant, not a field
            fields[item.target.id] = _value(module, item.value)
    return fields


def show(value: Any) -> str:
    """A default as help text writes it: 256x128, off/on, 0.5, resnet50."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        if value and abs(value) < 1e-3:  # 3.5e-4, as papers write rates
            mantissa, exponent = f"{value:e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:g}"
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return format_size(value)
    if isinstance(value, tuple):
        return ",".join(show(v) for v in value)
    return str(value)


class ConfigDefaults:
    """The field defaults of one config dataclass, for help texts: `TRAIN["epochs"]` is the value,
    `TRAIN.show("epochs")` its text, `TRAIN.note("epochs")` the "[default: 120]" a help ends with."""

    made: list["ConfigDefaults"] = []  # every instance, for the test that imports the real classes

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name
        self.used: set[str] = set()
        ConfigDefaults.made.append(self)

    def __getitem__(self, field: str) -> Any:
        fields = _class_defaults(self.module, self.name)
        if field not in fields:
            raise LookupError(f"{self.module}.{self.name} has no field {field!r} with a literal default")
        self.used.add(field)
        return fields[field]

    def show(self, field: str) -> str:
        return show(self[field])

    def note(self, field: str, more: str = "") -> str:
        """The help's "[default: VALUE{more}]" for `field`."""
        return default_note(self.show(field) + more)


def constant_note(module: str, name: str) -> str:
    """The "[default: VALUE]" of a module constant of ppvi_cli (`module` without the "ppvi_cli." prefix)."""
    return default_note(show(module_constant(f"ppvi_cli.{module}", name)))


def default_note(text: str) -> str:
    """The "[default: TEXT]" a help text ends with (the bracket escaped for typer's markdown help)."""
    return f"\\[default: {text}]"


PIXELFADE = ConfigDefaults("ppvi_cli.anonymize.pixelfade", "PixelFade")
MOSAIC = ConfigDefaults("ppvi_cli.anonymize.conventional", "Mosaic")
BLUR = ConfigDefaults("ppvi_cli.anonymize.conventional", "Blur")
NOISE = ConfigDefaults("ppvi_cli.anonymize.conventional", "Noise")
ATTACK = ConfigDefaults("ppvi_cli.attack.run", "AttackConfig")
GENERATOR = ConfigDefaults("ppvi_cli.train.generators.gan", "GeneratorTrainConfig")
SECUREREID = ConfigDefaults("ppvi_cli.train.generators.securereid", "SecureReIDConfig")
PPA = ConfigDefaults("ppvi_cli.train.generators.ppa", "PPAConfig")
TRAIN = ConfigDefaults("ppvi_cli.train.reid.trainer", "TrainConfig")
MODEL = ConfigDefaults("ppvi_cli.models.config", "ModelConfig")

# --- the shared options ------------------------------------------------------------------------------

DEVICE, SEED, FORMAT = "--device", "--seed", "--format"


def global_device_option():
    """The root's `--device` (env PPVI_DEVICE): where every command computes unless it is given its own."""
    return typer.Option(GlobalOptions.device, DEVICE, envvar="PPVI_DEVICE", show_envvar=True,
                        help=f"Compute device: {DEVICE_HELP}. On CUDA ppvi runs deterministic kernels: "
                        "the same GPU model and software give the same bytes.")


def global_seed_option():
    """The root's `--seed` (env PPVI_SEED)."""
    return typer.Option(GlobalOptions.seed, SEED, envvar="PPVI_SEED", show_envvar=True,
                        help="Global random seed (a command's own --seed wins).")


def device_option(what: str = "Compute device"):
    """A command's own `--device` (None: the global one; see `common.effective_device`)."""
    return typer.Option(None, DEVICE, help=f"{what}: {DEVICE_HELP} (default: the global --device).")


def seed_option(what: str = "Random seed"):
    """A command's own `--seed` (None: the global one; see `common.effective_seed`)."""
    return typer.Option(None, SEED, help=f"{what} (default: the global --seed).")


def format_option(default: str | None = "auto", what: str = "Dataset layout", only: str = ""):
    """`--format/-f`, the dataset layout: "auto" or a reader's name (choices from the registry; annotate
    the parameter with `choices.Format`). `only`: the condition it applies under ("With --model.");
    a None `default` (the option given only with another) still means auto."""
    help_text = f"{what} (auto: detected from its folders)."
    if only:
        help_text = f"{only} {help_text}"
    if default is None:
        help_text += " " + default_note("auto")
    return choice_option(default, FORMAT, "-f", help=help_text)
