"""Ranked lists of an evaluation: JSON a script can read, and a figure a person can look at.

Junk gallery items never appear (they are not part of a query's list). In the figure each row is a
query (blue frame) followed by its top-k gallery images, framed green when the id matches and red
when it does not; an image that is missing or unreadable is drawn as a grey tile with its pid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ppvi_cli.data.imageio import ImageReadError, read_image, write_image_atomic, write_text_atomic

QUERY, MATCH, WRONG = (40, 90, 220), (20, 160, 40), (210, 30, 30)
BORDER = 3


def ranked_entries(features, ranked: dict) -> list[dict]:
    """Per query: its path/pid/camid and the top-k gallery items (path, pid, camid, score, match).

    `features` is a `FeatureSet`; `ranked` is the "ranked" part of `evaluate`'s result.
    """
    qpaths, gpaths = features.query_paths, features.gallery_paths
    entries = []
    for q in range(len(features.query_pids)):
        top = []
        for j, score, match in zip(ranked["gallery"][q], ranked["score"][q], ranked["match"][q]):
            if j < 0:
                break
            top.append({"gallery": int(j), "path": None if gpaths is None else str(gpaths[j]),
                        "pid": int(features.gallery_pids[j]), "camid": int(features.gallery_camids[j]),
                        "score": float(score), "match": bool(match)})
        entries.append({"query": q, "path": None if qpaths is None else str(qpaths[q]),
                        "pid": int(features.query_pids[q]), "camid": int(features.query_camids[q]), "top": top})
    return entries


def write_ranked_json(path: str | Path, protocol: str, topk: int, per_setting: dict[str, list[dict]],
                      trial: int = 0) -> None:
    """{"protocol", "topk", "trial", "settings": {setting: [entry, ...]}}, written atomically."""
    doc = {"protocol": protocol, "topk": topk, "trial": trial, "settings": per_setting}
    write_text_atomic(path, json.dumps(doc, indent=1) + "\n")


def _tile(path: str | None, image_root: Path | None, pid: int, size: tuple[int, int], font) -> Image.Image:
    width, height = size
    full = None
    if path is not None and image_root is None:
        full = Path(path)
    elif path is not None and not Path(path).is_absolute():  # an absolute path cannot be mapped to the root's form
        full = image_root / path
    if full is not None:
        try:
            pixels = read_image(full)
            return Image.fromarray(pixels).convert("RGB").resize((width, height), Image.BILINEAR)
        except ImageReadError:
            pass
    tile = Image.new("RGB", (width, height), (150, 150, 150))
    ImageDraw.Draw(tile).text((4, height // 2 - 12), f"pid {pid}\nno image", fill=(255, 255, 255), font=font)
    return tile


def pick_queries(n: int, count: int) -> list[int]:
    """`count` query indices spread evenly over `n` (all of them when n <= count)."""
    return sorted(set(np.linspace(0, n - 1, min(n, count)).round().astype(int).tolist())) if n else []


def draw_ranked_figure(path: str | Path, entries: list[dict], image_root: str | Path | None = None,
                       max_queries: int = 8, cell: tuple[int, int] = (64, 128), title: str = "",
                       gallery_root: str | Path | None = None) -> Path:
    """Draw rows of (query, top-k) tiles to a PNG; returns the path. `cell` is (width, height) in pixels.

    Query tiles are read under `image_root`, gallery tiles under `gallery_root` (default: the same),
    so each side of a setting shows its own form (raw or protected) of the images.
    """
    roots = [None if r is None else Path(r) for r in (image_root, image_root if gallery_root is None else gallery_root)]
    rows = [entries[i] for i in pick_queries(len(entries), max_queries)]
    k = max((len(e["top"]) for e in rows), default=0)
    font = ImageFont.load_default()
    width, height = cell
    pad, gap, text_h, head = 6, 18, 14, 22 if title else 4
    canvas = Image.new("RGB", (pad + (width + pad) * (k + 1) + gap, head + len(rows) * (height + text_h + pad) + pad),
                       (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 4), title, fill=(0, 0, 0), font=font)
    for r, entry in enumerate(rows):
        y = head + r * (height + text_h + pad)
        items = [(entry, QUERY, f"q{entry['query']} pid {entry['pid']}")]
        items += [(g, MATCH if g["match"] else WRONG, f"{g['score']:.3f}") for g in entry["top"]]
        for c, (item, colour, label) in enumerate(items):
            x = pad + c * (width + pad) + (gap if c else 0)
            canvas.paste(_tile(item["path"], roots[c > 0], item["pid"], (width, height), font), (x, y))
            draw.rectangle([x, y, x + width - 1, y + height - 1], outline=colour, width=BORDER)
            draw.text((x + 1, y + height + 1), label, fill=colour, font=font)
    write_image_atomic(path, np.asarray(canvas))
    return Path(path)
