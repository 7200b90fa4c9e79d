"""Image grids a person can look at: raw next to each protection, visible and infrared rows."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from PIL import Image, ImageDraw

from ppvi_cli.data.imageio import read_image
from ppvi_cli.data.records import INFRARED, VISIBLE, Record

LABEL_H = 16
GAP = 4


def pick_examples(records: Sequence[Record], per_modality: int = 3) -> list[Record]:
    """Up to `per_modality` records of distinct ids for each modality, visible rows first."""
    chosen = []
    for modality in (VISIBLE, INFRARED):
        seen = set()
        for rec in records:
            if rec.modality == modality and rec.pid not in seen:
                chosen.append(rec)
                seen.add(rec.pid)
                if len(seen) == per_modality:
                    break
    return chosen


def _cell(path: Path, size: tuple[int, int]) -> Image.Image:
    pixels = read_image(path)
    image = Image.fromarray(pixels).convert("RGB")
    return image.resize(size, Image.Resampling.NEAREST) if image.size != size else image


def method_grid(examples: Sequence[Record], columns: Mapping[str, str | Path], out_png: str | Path,
                cell: tuple[int, int] = (64, 128)) -> Path:
    """Write a PNG: one row per example record, one column per folder in `columns` (label -> root).

    `cell` is (width, height) of each thumbnail. The first column is usually the raw dataset.
    """
    width = len(columns) * (cell[0] + GAP) + GAP + 70
    height = LABEL_H + len(examples) * (cell[1] + GAP) + GAP
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    x0 = 70
    for j, label in enumerate(columns):
        draw.text((x0 + GAP + j * (cell[0] + GAP), 2), label[:12], fill="black")
    for i, rec in enumerate(examples):
        y = LABEL_H + GAP + i * (cell[1] + GAP)
        draw.text((4, y + cell[1] // 2 - 12), f"{rec.modality[:3]}\npid {rec.pid}", fill="black")
        for j, root in enumerate(columns.values()):
            canvas.paste(_cell(Path(root) / rec.relpath, cell), (x0 + GAP + j * (cell[0] + GAP), y))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_png)
    return out_png
