"""Dataset-level privacy and chaos measures: read images, call the metric kernels, aggregate, gate.

The kernels in `ppvi_cli.metrics` are pure; this module owns the I/O and the per-modality means.
Gates fail closed: a value that cannot be computed for some file is undefined, its modality's mean
is undefined (null in JSON), and a gate on it fails naming those files. What "undefined" means per
metric: the AD of a constant image (no spread to standardise by; a flat image is not chaotic at
all), the SSIM of an image smaller than the 7x7 window. A PSNR of identical images is +inf: defined,
and above any limit.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from ppvi_cli.data.imageio import ImageReadError, read_image
from ppvi_cli.data.inputs import Inputs, check_mirror, collect_inputs
from ppvi_cli.data.records import Record
from ppvi_cli.errors import PPVIError
from ppvi_cli.progress import Progress, Tracker
from ppvi_cli.runinfo import stamp

BATCH = 256  # images decoded at once: bounds memory on large archives


def _read(path: Path) -> np.ndarray:
    try:
        return read_image(path)
    except ImageReadError as exc:
        raise PPVIError(f"cannot measure {exc.path}: {exc.reason}") from None


def _measurable(inputs: Inputs, option: str) -> list[Record]:
    """The records, refusing a root with image files that cannot be read (a gate must see every image)."""
    if inputs.refused:
        item = inputs.refused[0]
        raise PPVIError(f"cannot measure {option} {item['path']}: {item['reason']} "
                        f"({len(inputs.refused)} such file(s)); remove them or measure another folder")
    return inputs.records


def _undefined(rows: list[dict], key: str) -> dict[str, list[str]]:
    """Paths whose `key` is undefined (NaN), per modality (empty modalities left out)."""
    out: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        if isinstance(row[key], float) and math.isnan(row[key]):
            out[row["modality"]].append(row["path"])
    return dict(out)


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


def chaos_report(root: str | Path, fmt: str = "auto", on_progress: Progress | None = None) -> dict:
    """Anderson-Darling statistic of every image's pixels against a normal law; lower = more chaotic.

    Returns `{"images": [{"path", "modality", "ad"}], "mean": {modality: ad}, "undefined": {modality:
    [paths]}}`; a constant image's AD is undefined (NaN), and so is its modality's mean.
    Progress: stage "chaos", images scored.
    """
    from ppvi_cli.metrics.chaos import chaos_scores

    inputs = collect_inputs(root, fmt)
    records, used = _measurable(inputs, "DIR"), inputs.format
    tracker = Tracker(on_progress, "chaos", len(records))
    tracker.start()
    rows = []
    for batch in _batches(records):
        scores = chaos_scores([_read(r.path) for r in batch])
        rows += [{"path": r.relpath, "modality": r.modality, "ad": float(s)} for r, s in zip(batch, scores)]
        tracker.advance(len(batch))
    return {"images": rows, "mean": _means(rows, ("ad",)), "undefined": {"ad": _undefined(rows, "ad")},
            "format": used, "root": str(root),
            "run": stamp(None, {"format": fmt, "statistic": "scipy.stats.anderson(x, 'norm').statistic"})}


def paired_records(raw_root: str | Path, anon_root: str | Path, fmt: str = "auto") -> tuple[list[Record], str]:
    """Raw records whose anonymized twin exists; refuse a mirror that lacks some of them."""
    inputs = collect_inputs(raw_root, fmt)
    records = _measurable(inputs, "--raw")
    check_mirror(records, anon_root)
    return records, inputs.format


def privacy_report(raw_root: str | Path, anon_root: str | Path, fmt: str = "auto",
                   on_progress: Progress | None = None) -> dict:
    """SSIM and PSNR of each anonymized image against its raw twin, and their mean per modality.

    Returns `{"images": [{"path", "modality", "ssim", "psnr"}], "mean": {modality: {"ssim", "psnr"}},
    "undefined": {"ssim": {modality: [paths]}}}`: the SSIM of an image smaller than its 7x7 window
    is undefined (NaN). Progress: stage "privacy", images compared.
    """
    from ppvi_cli.metrics.image_quality import batch_ssim_psnr

    records, used = paired_records(raw_root, anon_root, fmt)
    tracker = Tracker(on_progress, "privacy", len(records))
    tracker.start()
    rows_by_path: dict[str, dict] = {}
    for batch in _batches(records):
        by_shape: dict[tuple, list[tuple[Record, np.ndarray, np.ndarray]]] = defaultdict(list)
        for rec in batch:
            raw, anon = _read(rec.path), _read(Path(anon_root) / rec.relpath)
            if raw.shape != anon.shape:
                raise PPVIError(f"{rec.relpath}: anonymized image is {anon.shape}, raw is {raw.shape}")
            by_shape[raw.shape].append((rec, raw, anon))
        for shape, group in by_shape.items():
            raws, anons = np.stack([g[1] for g in group]), np.stack([g[2] for g in group])
            ssim, psnr = batch_ssim_psnr(raws, anons, min_side=1)  # below the window: SSIM undefined
            for (rec, _, _), s, p in zip(group, ssim, psnr):
                rows_by_path[rec.relpath] = {"path": rec.relpath, "modality": rec.modality,
                                             "ssim": float(s), "psnr": float(p)}
        tracker.advance(len(batch))
    rows = [rows_by_path[r.relpath] for r in records]
    return {"images": rows, "mean": _means(rows, ("ssim", "psnr")), "undefined": {"ssim": _undefined(rows, "ssim")},
            "format": used,
            "raw": str(raw_root), "anon": str(anon_root),
            "run": stamp(None, {"format": fmt, "data_range": 255, "ssim_window": 7})}


def gate_failures(means: dict, limits: dict[str, float | None], undefined: dict | None = None) -> list[str]:
    """Human lines for every gated modality mean above its limit or undefined (fail closed).

    `means` maps a modality to a value or to `{metric: value}`; `limits` maps a metric to a max or
    None (not gated); `undefined` maps a metric to `{modality: [paths]}` that made its mean undefined.
    """
    failures = []
    for modality, value in means.items():
        values = value if isinstance(value, dict) else {next(iter(limits)): value}
        for metric, limit in limits.items():
            if limit is None:
                continue
            got = values.get(metric)
            if got is None or (isinstance(got, float) and math.isnan(got)):
                paths = ((undefined or {}).get(metric) or {}).get(modality, [])
                which = f" by {len(paths)} image(s): {', '.join(paths[:3])}{' ...' if len(paths) > 3 else ''}" if paths else ""
                failures.append(f"{modality} mean {metric} is undefined{which}; an undefined value fails the gate")
            elif got > limit:
                failures.append(f"{modality} mean {metric} {got:.4g} > {limit:g}")
    return failures
