"""Dataset-level privacy and chaos measures: read images, call the metric kernels, aggregate.

The kernels in `ppvi_cli.metrics` are pure; this module owns the I/O and the per-modality means.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ppvi_cli.data.imageio import ImageReadError, read_image
from ppvi_cli.data.inputs import check_mirror, collect_inputs
from ppvi_cli.data.records import Record
from ppvi_cli.errors import PPVIError
from ppvi_cli.runinfo import stamp

BATCH = 256  # images decoded at once: bounds memory on large archives


def _read(path: Path) -> np.ndarray:
    try:
        return read_image(path)
    except ImageReadError as exc:
        raise PPVIError(f"cannot measure {exc.path}: {exc.reason}") from None


def _batches(items: list, size: int = BATCH) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _means(rows: list[dict], keys: tuple[str, ...]) -> dict:
    """Mean of each key per modality; an infinite PSNR (identical images) makes the mean infinite."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["modality"]].append(row)
    out = {}
    for modality in sorted(groups):
        vals = {k: float(np.mean([r[k] for r in groups[modality]])) for k in keys}
        out[modality] = vals if len(keys) > 1 else vals[keys[0]]
    return out


def chaos_report(root: str | Path, fmt: str = "auto", on_progress: Callable[[int], None] | None = None,
                 on_total: Callable[[int], None] | None = None) -> dict:
    """Anderson-Darling statistic of every image's pixels against a normal law; lower = more chaotic.

    Returns `{"images": [{"path", "modality", "ad"}], "mean": {modality: ad}}`.
    """
    from ppvi_cli.metrics.chaos import chaos_scores

    records, _, used = collect_inputs(root, fmt)
    if on_total:
        on_total(len(records))
    rows = []
    for batch in _batches(records):
        scores = chaos_scores([_read(r.path) for r in batch])
        rows += [{"path": r.relpath, "modality": r.modality, "ad": float(s)} for r, s in zip(batch, scores)]
        if on_progress:
            on_progress(len(batch))
    return {"images": rows, "mean": _means(rows, ("ad",)), "format": used, "root": str(root),
            "run": stamp(None, {"format": fmt, "statistic": "scipy.stats.anderson(x, 'norm').statistic"})}


def paired_records(raw_root: str | Path, anon_root: str | Path, fmt: str = "auto") -> tuple[list[Record], str]:
    """Raw records whose anonymized twin exists; refuse a mirror that lacks some of them."""
    records, _, used = collect_inputs(raw_root, fmt)
    check_mirror(records, anon_root)
    return records, used


def privacy_report(raw_root: str | Path, anon_root: str | Path, fmt: str = "auto",
                   on_progress: Callable[[int], None] | None = None,
                   on_total: Callable[[int], None] | None = None) -> dict:
    """SSIM and PSNR of each anonymized image against its raw twin, and their mean per modality.

    Returns `{"images": [{"path", "modality", "ssim", "psnr"}], "mean": {modality: {"ssim", "psnr"}}}`.
    """
    from ppvi_cli.metrics.image_quality import batch_ssim_psnr

    records, used = paired_records(raw_root, anon_root, fmt)
    if on_total:
        on_total(len(records))
    rows_by_path: dict[str, dict] = {}
    for batch in _batches(records):
        by_shape: dict[tuple, list[tuple[Record, np.ndarray, np.ndarray]]] = defaultdict(list)
        for rec in batch:
            raw, anon = _read(rec.path), _read(Path(anon_root) / rec.relpath)
            if raw.shape != anon.shape:
                raise PPVIError(f"{rec.relpath}: anonymized image is {anon.shape}, raw is {raw.shape}")
            by_shape[raw.shape].append((rec, raw, anon))
        for group in by_shape.values():
            ssim, psnr = batch_ssim_psnr(np.stack([g[1] for g in group]), np.stack([g[2] for g in group]))
            for (rec, _, _), s, p in zip(group, ssim, psnr):
                rows_by_path[rec.relpath] = {"path": rec.relpath, "modality": rec.modality,
                                             "ssim": float(s), "psnr": float(p)}
        if on_progress:
            on_progress(len(batch))
    rows = [rows_by_path[r.relpath] for r in records]
    return {"images": rows, "mean": _means(rows, ("ssim", "psnr")), "format": used,
            "raw": str(raw_root), "anon": str(anon_root),
            "run": stamp(None, {"format": fmt, "data_range": 255, "ssim_window": 7})}


def gate_failures(means: dict, limits: dict[str, float | None]) -> list[str]:
    """Human lines for every modality mean above its limit (`limits` maps a metric to a max or None)."""
    failures = []
    for modality, value in means.items():
        values = value if isinstance(value, dict) else {next(iter(limits)): value}
        for metric, limit in limits.items():
            if limit is not None and values[metric] > limit and not math.isnan(values[metric]):
                failures.append(f"{modality} mean {metric} {values[metric]:.4g} > {limit:g}")
    return failures
