"""`--config FILE`: a run's arguments from a YAML file or from a run's own `run.json`.

As fast-reid's and ultralytics' configs do, a file holds a run's settings and the command line varies
them: a flag given on the command line wins over the file, the file over the defaults. The keys are
the config dataclass's fields, the names run.json records under "params", so a run.json replays its
run exactly (with the values it resolved from the data: lr, warm-up, input size, splits) and a YAML
file names any subset. Unknown keys are refused with the closest valid one; values are converted to
the field's type here and range-checked by the dataclass's own `check`.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import fields
from pathlib import Path
from types import NoneType, UnionType

from ppvi_cli.errors import PPVIError
from ppvi_cli.validate import parse_size

RUN_FORMATS = ("ppvi-train-run",)  # a run.json: its arguments are under "params"


def read_config(path: str | Path, config_class: type, exclude: tuple[str, ...] = ()) -> dict:
    """The fields a config file sets, converted to `config_class`'s field types.

    `path`: YAML (or JSON, which YAML reads) mapping field -> value, or a run.json. `exclude`: fields
    a file may not set (e.g. `resume`, a decision of the command line). Raises PPVIError naming the
    file and key for an unreadable file, an unknown key or a value of the wrong kind.
    """
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise PPVIError(f"--config {path}: cannot be read ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise PPVIError(f"--config {path}: not YAML or JSON ({str(err).splitlines()[0]})") from None
    if isinstance(doc, dict) and doc.get("format") in RUN_FORMATS:
        doc = doc.get("params")
    if not isinstance(doc, dict):
        raise PPVIError(f"--config {path}: expected a mapping of option names to values (or a run.json)")
    hints = typing.get_type_hints(config_class)
    known = [f.name for f in fields(config_class) if f.name not in exclude]
    values = {}
    for key, value in doc.items():
        name = str(key).replace("-", "_")
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PPVIError(f"--config {path}: unknown key {key!r}{hint} (keys: {', '.join(known)})")
        values[name] = _convert(value, hints[name], f"--config {path}: {key}")
    return values


def _convert(value, kind, where: str):
    """`value` (as YAML or JSON gave it) as a value of type `kind` (a field's annotation)."""
    options = typing.get_args(kind) if isinstance(kind, UnionType) or typing.get_origin(kind) is typing.Union \
        else (kind,)
    if value is None:
        if NoneType in options:
            return None
        raise PPVIError(f"{where} may not be empty")
    kind = next(k for k in options if k is not NoneType)
    origin = typing.get_origin(kind)
    if origin is tuple:
        args = typing.get_args(kind)
        if isinstance(value, str) and args == (int, int):  # a size as the flag spells it: 256x128
            return parse_size(value, where)
        if not isinstance(value, (list, tuple)):
            raise PPVIError(f"{where} must be a list, got {value!r}")
        item = args[0]
        if len(args) != 2 or args[1] is not Ellipsis:
            if len(value) != len(args):
                raise PPVIError(f"{where} must have {len(args)} values, got {len(value)}")
        return tuple(_convert(v, item, where) for v in value)
    if kind is bool:
        if not isinstance(value, bool):
            raise PPVIError(f"{where} must be true or false, got {value!r}")
        return value
    if kind in (int, float):
        try:  # YAML reads 1e-3 (no dot) as a string
            number = kind(value) if isinstance(value, str) else value
        except ValueError:
            number = None
        if isinstance(number, bool) or not isinstance(number, (int, float)) or (
                kind is int and isinstance(number, float) and not number.is_integer()):
            raise PPVIError(f"{where} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        return kind(number)
    if kind is Path:
        if not isinstance(value, str):
            raise PPVIError(f"{where} must be a path, got {value!r}")
        return Path(value)
    if not isinstance(value, str):
        raise PPVIError(f"{where} must be a string, got {value!r}")
    return value
