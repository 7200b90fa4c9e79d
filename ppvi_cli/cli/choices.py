"""Options whose values are names from a registry: shown in `--help`, completed by the shell, checked
by the parser, and read from the registry itself (never a copied list).

Typer shows, completes and checks choices for an `Enum` annotation. The registries are read lazily:
`ppvi chaos` must not import torch because `train reid --backbone` lists torch models. So each
choice type here is an Enum whose members are made from the registry the first time they are
listed (help, completion, or parsing that option); until then nothing is imported. The command
receives the plain `str` (the option's callback unwraps the member; older typer, which converts by
calling the type, gets it from `__call__`), so checkpoints and JSON never hold an Enum. Older typer
(before the pydantic-based one, tested: 0.15) lists the choices when the app is built, so there
startup imports the registries; typer 0.29 reads them only when needed.
"""

from __future__ import annotations

from enum import Enum, EnumMeta
from typing import Callable, Iterable

import typer


class _RegistryChoices(EnumMeta):
    """Metaclass of a member-less Enum that lists another Enum's members, built on first use."""

    def _members(cls) -> type[Enum]:
        built = cls.__dict__.get("__built__")
        if built is None:
            names = list(cls.__dict__["__names__"]())
            built = Enum(cls.__name__, {name: name for name in names})
            type.__setattr__(cls, "__built__", built)
        return built

    def __iter__(cls):
        return iter(cls._members())

    def __len__(cls):
        return len(cls._members())

    def __contains__(cls, value):
        return value in cls._members() or value in {m.value for m in cls._members()}

    def __getitem__(cls, name):
        return cls._members()[name]

    def __call__(cls, value):
        """The plain name of `value` (a name or a member), checked: typer before 0.2x converts a
        parsed option by calling its Enum type, and a command must get a `str` there too."""
        member = value if isinstance(value, Enum) else cls._members()(value)
        return member.value


def registry_choice(name: str, names: Callable[[], Iterable[str]]) -> type[Enum]:
    """An Enum type for typer whose members are `names()` (called once, when first needed)."""
    namespace = _RegistryChoices.__prepare__(name, (Enum,))
    cls = _RegistryChoices(name, (Enum,), namespace)
    type.__setattr__(cls, "__names__", staticmethod(names))
    return cls


def names_of(choice: type[Enum]) -> list[str]:
    """The names a choice type offers (loads them)."""
    return [member.value for member in choice]


def _plain(value):
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def choice_option(default, *flags: str, **kwargs):
    """`typer.Option` for a choice type: the command gets the name as a plain `str` (or None)."""
    return typer.Option(default, *flags, callback=_plain, **kwargs)


def _formats() -> list[str]:
    from ppvi_cli.data.readers import FORMATS

    return ["auto", *FORMATS.names()]


def _methods() -> list[str]:
    from ppvi_cli.anonymize.methods import method_names

    return method_names()


def _protocols() -> list[str]:
    from ppvi_cli.metrics.protocols import protocols

    return protocols.names()


def _settings() -> list[str]:
    from ppvi_cli.metrics.features import SETTINGS

    return list(SETTINGS)


def _backbones() -> list[str]:
    from ppvi_cli.models.backbones import BACKBONES  # imports torch: only when --backbone is listed or parsed

    return BACKBONES.names()


def _backends() -> list[str]:
    from ppvi_cli.metrics.scorers import BACKENDS

    return list(BACKENDS)


Format = registry_choice("Format", _formats)
Method = registry_choice("Method", _methods)
Protocol = registry_choice("Protocol", _protocols)
Setting = registry_choice("Setting", _settings)
SettingOrAll = registry_choice("SettingOrAll", lambda: [*_settings(), "all"])
Backbone = registry_choice("Backbone", _backbones)
Backend = registry_choice("Backend", _backends)

