"""The recovery attack's data: public/test split of the raw dataset and (original, protected) pairs.

Pixels go to the UNet in [-1, 1] (`to_model`) and come back as the uint8 images that are stored
and measured (`to_pixels`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ppvi_cli.data.imageio import ImageReadError, read_image
from ppvi_cli.data.records import Record
from ppvi_cli.data.transforms import from_signed, resize, to_hwc, to_signed, to_tensor, to_uint8
from ppvi_cli.errors import PPVIError
from ppvi_cli.runinfo import derived_seed

PUBLIC_SPLITS = ("train",)
TEST_SPLITS = ("test", "query", "gallery")


def attack_splits(raw: Path, fmt: str, seed: int,
                  test_fraction: float) -> tuple[list[Record], list[Record], list[str], str]:
    """(public records, test records, notes, format used) of the raw dataset.

    A layout with both gives train -> public and test (or query + gallery) -> test. Otherwise (a
    folder, or a layout with one of them only) the images are cut by a seeded shuffle of their ids
    (of the images themselves when they carry no ids), `test_fraction` held out, and a note says so.
    """
    from ppvi_cli.data.inputs import collect_inputs
    from ppvi_cli.data.readers import detect_format, load_dataset

    used = detect_format(raw) if fmt == "auto" else fmt
    if used != "folder":
        dataset = load_dataset(raw, used)
        public = {r.relpath: r for s in PUBLIC_SPLITS for r in dataset.splits.get(s, [])}
        test = {r.relpath: r for s in TEST_SPLITS for r in dataset.splits.get(s, []) if r.relpath not in public}
        if public and test:
            return sorted(public.values()), sorted(test.values()), [], used
        records = dataset.records()
        lacking = "no train split" if not public else "no test split"
    else:
        inputs = collect_inputs(raw, fmt)
        records, used = inputs.records, inputs.format
        lacking = "no splits"
    public, test, how = _seeded_split(records, seed, test_fraction, raw)
    return public, test, [f"{lacking}: {how} (seed {seed})"], used


def _seeded_split(records: list[Record], seed: int, test_fraction: float, raw: Path) -> tuple[list, list, str]:
    by_id = len({r.pid for r in records}) >= 2
    key = (lambda r: r.pid) if by_id else (lambda r: r.relpath)  # noqa: E731
    keys = sorted({key(r) for r in records})
    if len(keys) < 2:
        raise PPVIError(f"--raw {raw} holds {len(keys)} image(s); the attack needs at least 2")
    order = np.random.default_rng(derived_seed(seed, "attack-split")).permutation(len(keys))
    held = {keys[i] for i in order[:min(len(keys) - 1, max(1, round(test_fraction * len(keys))))]}
    how = f"{len(held)} of {len(keys)} {'ids' if by_id else 'images (no ids)'} held out for the test split"
    return [r for r in records if key(r) not in held], [r for r in records if key(r) in held], how


def load_pair(record: Record, anon_root: Path, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(original, protected) as uint8 `[3, H, W]` at the working size (grey repeated to 3 channels)."""
    out = []
    for path in (record.path, anon_root / record.relpath):
        try:
            pixels = read_image(path)
        except ImageReadError as exc:
            raise PPVIError(f"attack: cannot read {exc.path}: {exc.reason}") from None
        out.append(resize(to_tensor(pixels), size).mul_(255.0).round_().clamp_(0, 255).to(torch.uint8))
    return out[0], out[1]


class PairImages(torch.utils.data.Dataset):
    """Index -> (original, protected, index), decoded on demand so memory stays flat."""

    def __init__(self, records: Sequence[Record], anon_root: Path, size: tuple[int, int]):
        self.records, self.anon_root, self.size = list(records), Path(anon_root), tuple(size)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        original, protected = load_pair(self.records[i], self.anon_root, self.size)
        return original, protected, i


def to_model(images: torch.Tensor) -> torch.Tensor:
    """uint8 `[B, 3, H, W]` -> float in [-1, 1]."""
    return to_signed(images.float() / 255.0)


def to_pixels(images: torch.Tensor) -> np.ndarray:
    """Model output `[B, 3, H, W]` in [-1, 1] -> uint8 `[B, H, W, 3]` as stored (`transforms.to_uint8`'s rule)."""
    return to_hwc(to_uint8(from_signed(images)))
