"""The registry of protection methods and the interface the mirrored runner drives.

A method protects a batch of decoded images (uint8 `[H, W]` or `[H, W, 3]`) and returns images of
the same shape and dtype. Randomness comes from one seed per image (derived from the run seed and
the image's relative path), so a resumed or sharded run writes the same bytes as a single run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar, Sequence

import numpy as np

from ppvi_cli.data.records import Record
from ppvi_cli.registry import Registry

METHODS: Registry[type["Method"]] = Registry("method")

# Modules that register methods; imported on first use so `ppvi --help` stays light.
_METHOD_MODULES = ("ppvi_cli.anonymize.conventional",)


def load_methods() -> list[str]:
    """Import every method module and return the registered names."""
    import importlib

    for module in _METHOD_MODULES:
        importlib.import_module(module)
    return METHODS.names()


@dataclass
class Method:
    """Base of every protection method; its dataclass fields are its parameters (with defaults)."""

    name: ClassVar[str] = ""

    def params(self) -> dict:
        return asdict(self)

    def protect(self, images: Sequence[np.ndarray], records: Sequence[Record], seeds: Sequence[int]) -> list[np.ndarray]:
        raise NotImplementedError


def build_method(name: str, **params) -> Method:
    """Instantiate a registered method; unknown parameters raise PPVIError naming them."""
    from dataclasses import fields

    from ppvi_cli.errors import PPVIError

    load_methods()
    cls = METHODS.get(name)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise PPVIError(f"method {name!r} takes no parameter {', '.join(unknown)} (its parameters: {', '.join(sorted(known)) or 'none'})")
    return cls(**params)
