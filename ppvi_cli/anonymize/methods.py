"""The registry of protection methods and the interface the mirrored runner drives.

A method protects a batch of decoded images (uint8 `[H, W]` or `[H, W, 3]`) and returns 8-bit
images. Randomness comes from one seed per image (derived from the run seed and the image's
relative path), so a resumed or sharded run writes the same bytes as a single run.

Methods that need a model (PixelFade's authorized ReID model, a generator) load it in `setup`,
which the runner calls once with the `--device` value; the device is not a parameter, so a resume
may use another one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import ClassVar, NamedTuple, Sequence

import numpy as np

from ppvi_cli.data.records import Record
from ppvi_cli.registry import Registry

METHODS: Registry[type["Method"]] = Registry("method")

# Which module registers which methods. A module is imported only when one of its methods is used,
# so `--method mosaic` does not pay for importing torch; tests check this table against the registry.
_METHOD_MODULES = {
    "ppvi_cli.anonymize.conventional": ("blur", "mosaic", "noise"),
    "ppvi_cli.anonymize.pixelfade": ("pixelfade",),
    "ppvi_cli.anonymize.generator": ("generator",),
}


def load_methods() -> list[str]:
    """Import every method module and return the registered names."""
    import importlib

    for module in _METHOD_MODULES:
        importlib.import_module(module)
    return METHODS.names()


def method_names() -> list[str]:
    """Every method name, read from the table above: no method module (nor torch) is imported."""
    return sorted(name for names in _METHOD_MODULES.values() for name in names)


def method_class(name: str) -> type["Method"]:
    """The class registered as `name`, importing only its module; an unknown name raises PPVIError
    with the closest valid one."""
    import importlib

    module = next((m for m, names in _METHOD_MODULES.items() if name in names), None)
    if module is None:
        load_methods()  # so the error lists every method and suggests the closest
    else:
        importlib.import_module(module)
    return METHODS.get(name)


class Protected(NamedTuple):
    """One protected image as the runner writes it.

    `pixels`: uint8 `[H, W]` or `[H, W, 3]`, the file's content. `stats`: per-file numbers for the
    manifest (e.g. PixelFade's feature distances). `float_pixels`: float32 `[H, W, 3]` in [0, 1]
    units before 8-bit rounding (only from `float_copy` methods; the `--save-float` copy).
    """

    pixels: np.ndarray
    stats: dict
    float_pixels: np.ndarray | None = None


@dataclass
class Method:
    """Base of every protection method; its dataclass fields are its parameters (with defaults).

    Class flags the runner reads:
    - `lossless`: the result carries low-amplitude detail that JPEG would destroy (PixelFade's
      optimised noise, SecureReID's recovery information), so files are stored as PNG content
      (under their original names).
    - `float_copy`: `protect_batch` fills `float_pixels` (what `--save-float` writes).
    - `batch_sensitive`: batched model arithmetic may differ in the last float bits with the batch's
      make-up, so the runner cuts the same batches in every run (resume, shards) for equal bytes.
    """

    name: ClassVar[str] = ""
    lossless: ClassVar[bool] = False
    float_copy: ClassVar[bool] = False
    batch_sensitive: ClassVar[bool] = False

    def params(self) -> dict:
        return asdict(self)

    def setup(self, device: str = "auto") -> dict:
        """Load what the method needs onto `device`; return what the manifest records about it.

        The dict (e.g. a model's path, checksum and config; `{}` when there is nothing) must match
        between runs into one output; its optional "device" key (where it runs) is recorded only.
        """
        return {}

    def inputs(self) -> dict[str, str | None]:
        """Files the method reads, by option (e.g. {"--model": path}): no output may land on them."""
        return {}

    def protect(self, images: Sequence[np.ndarray], records: Sequence[Record], seeds: Sequence[int]) -> list[np.ndarray]:
        raise NotImplementedError

    def protect_batch(self, images: Sequence[np.ndarray], records: Sequence[Record],
                      seeds: Sequence[int]) -> list[Protected]:
        """What the runner calls: the protected images with their per-file stats."""
        return [Protected(pixels, {}) for pixels in self.protect(images, records, seeds)]


def method_fields(name: str) -> set[str]:
    """The parameter names of a registered method (what `build_method` accepts)."""
    return {f.name for f in fields(method_class(name))}


def build_method(name: str, **params) -> Method:
    """Instantiate a registered method; unknown parameters raise PPVIError naming them."""
    from ppvi_cli.errors import PPVIError

    known = method_fields(name)
    unknown = sorted(set(params) - known)
    if unknown:
        raise PPVIError(f"method {name!r} takes no parameter {', '.join(unknown)} (its parameters: {', '.join(sorted(known)) or 'none'})")
    return method_class(name)(**params)
