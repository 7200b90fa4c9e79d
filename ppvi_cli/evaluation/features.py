"""A model's features of a dataset's query and gallery (`split.eval_split`), and their cache.

The cache keys features by the model (weight SHA-256 and config), the split, the hardware and
arithmetic that computed them (`device.device_kind`, float32: features from a GPU are not served to
a CPU evaluation, nor the reverse) and the SHA-256 of every image file read. Content hashes rather
than (size, mtime): reading bytes costs far less than decoding them and running the model (0.4 s
for the 8,642 Market subset images, warm), and mtimes lie both ways (a copy without -p changes
them, an edit that restores them hides a change).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ppvi_cli.data.regdb import DEFAULT_TRIAL
from ppvi_cli.errors import PPVIError
from ppvi_cli.evaluation.split import DEFAULT_TEST_IDS, EvalSplit, eval_split
from ppvi_cli.evaluation.store import load_features, save_features
from ppvi_cli.metrics.features import FeatureSet
from ppvi_cli.progress import Progress, Tracker

CACHE_VERSION = 1  # bump when the cached arrays would change for the same inputs


BATCH_SIZE = 64  # images per forward pass of the feature extraction


def default_cache_dir() -> Path:
    """`$PPVI_CACHE_DIR`, else `$XDG_CACHE_HOME/ppvi/features` (`~/.cache/ppvi/features`)."""
    if os.environ.get("PPVI_CACHE_DIR"):
        return Path(os.environ["PPVI_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "ppvi" / "features"


def _file_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise PPVIError(f"cannot read {path}: {exc.strerror or exc}") from None


def cache_key(model_sha256: str, model_config: dict, input_size: Sequence[int], split: EvalSplit,
              anon_root: str | Path | None, device_kind: str, precision: str = "float32") -> str:
    """Hex SHA-256 over the model, the split, where and in what arithmetic the features are computed
    (`device_kind` as `device.device_kind` names it; `precision` of the model's arithmetic) and the
    content of every image file that would be read."""
    digest = hashlib.sha256()
    header = {"cache_version": CACHE_VERSION, "model_sha256": model_sha256, "model_config": model_config,
              "input_size": list(input_size), "split": split.params, "anon": anon_root is not None,
              "device": device_kind, "precision": precision}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for side, records in (("query", split.query), ("gallery", split.gallery)):
        for rec in records:
            digest.update(f"\n{side}|{rec.relpath}|{rec.pid}|{rec.camid}|{rec.modality}|".encode())
            digest.update(_file_sha256(rec.path).encode())
            if anon_root is not None:
                digest.update(b"|" + _file_sha256(Path(anon_root) / rec.relpath).encode())
    return digest.hexdigest()


@dataclass
class ModelFeatures:
    """`features` of a split, and whether they came from the cache ("hit", "miss" or "off")."""

    features: FeatureSet
    split: EvalSplit
    cache: str
    cache_path: Path | None
    model_sha256: str


def _cached(path: Path, notes: list[str]) -> FeatureSet | None:
    if not path.is_file():
        return None
    try:
        return load_features(path)
    except PPVIError:  # a damaged entry is recomputed and replaced, never trusted
        notes.append(f"cache entry {path.name} was unreadable and is rewritten")
        return None


def dataset_features(
    model,
    data_root: str | Path,
    fmt: str = "auto",
    anon_root: str | Path | None = None,
    device="cpu",
    batch_size: int = BATCH_SIZE,
    cache_dir: str | Path | None = None,
    *,
    model_sha256: str | None = None,
    protocol: str | None = None,
    trial: int = DEFAULT_TRIAL,
    test_ids: int = DEFAULT_TEST_IDS,
    pattern: str | None = None,
    input_size: tuple[int, int] | None = None,
    num_workers: int = 0,
    on_progress: Progress | None = None,
    world=None,
) -> ModelFeatures:
    """Query and gallery features of `model` on a dataset, raw and (with `anon_root`) anonymized.

    Rows follow `eval_split`'s record order; raw and anon rows are the same images; paths are
    relative to the dataset root. `model_sha256` (the checkpoint's) saves hashing the weights.
    With `cache_dir`, features are reused when model, split and every image's bytes are unchanged
    (the cache holds identity features and image paths: keep it private, or pass no cache_dir).
    Progress: stage "features", images extracted of all to extract (raw and anon; no events on a hit).
    `world` (a `distributed.World`, under torchrun): each rank extracts every WORLD_SIZE-th batch and
    all ranks return the whole set, batch for batch what one process computes; rank 0 writes the cache.
    """
    from ppvi_cli.data.inputs import check_mirror
    from ppvi_cli.device import device_kind, select_device
    from ppvi_cli.models.checkpoint import state_dict_sha256

    split = eval_split(data_root, fmt, protocol=protocol, trial=trial, test_ids=test_ids, pattern=pattern)
    records = split.query + split.gallery
    if anon_root is not None:
        check_mirror(records, anon_root)
    model_sha256 = model_sha256 or state_dict_sha256(model.state_dict())
    size = tuple(input_size or model.config.input_size)
    source = f"features of {split.root}" + ("" if anon_root is not None else " (no --anon)")
    cache_path = None
    if cache_dir is not None:
        device = select_device(device) if isinstance(device, str) else device
        # float32 everywhere: extraction runs TF32-free on CUDA (device.deterministic)
        key = cache_key(model_sha256, model.config.to_dict(), size, split, anon_root, device_kind(device))
        cache_path = Path(cache_dir).expanduser() / f"{key}.npz"
        hit = _cached(cache_path, split.notes)
        if hit is not None:
            return ModelFeatures(dataclasses.replace(hit, source=source), split, "hit", cache_path, model_sha256)
    tracker = Tracker(on_progress, "features", len(records) * (1 if anon_root is None else 2))
    tracker.start()
    nq = len(split.query)
    forms = {"raw": None} | ({"anon": anon_root} if anon_root is not None else {})
    query, gallery = {}, {}
    for form, root in forms.items():
        feats = _extract(model, records, device, batch_size, size, root, tracker.part(), num_workers, world)
        query[form], gallery[form] = feats[:nq], feats[nq:]
    ints = lambda recs, attr: np.array([getattr(r, attr) for r in recs], dtype=np.int64)  # noqa: E731
    paths = lambda recs: np.array([r.relpath for r in recs], dtype=str)  # noqa: E731
    features = FeatureSet(source, query, gallery, ints(split.query, "pid"), ints(split.query, "camid"),
                          ints(split.gallery, "pid"), ints(split.gallery, "camid"),
                          paths(split.query), paths(split.gallery))
    if cache_path is not None and (world is None or world.main):
        cache_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # identity features: owner only
        save_features(cache_path, features)
    return ModelFeatures(features, split, "off" if cache_path is None else "miss", cache_path, model_sha256)


def _extract(model, records, device, batch_size, size, root, on_progress, num_workers, world) -> np.ndarray:
    """`extract_features`, or under torchrun this rank's share of whole batches gathered from every rank."""
    from ppvi_cli.distributed import all_gather
    from ppvi_cli.models.extract import extract_features

    if world is None:
        return extract_features(model, records, device, batch_size, size, root, on_progress, num_workers)
    starts = range(0, len(records), batch_size)[world.rank::world.size]  # the single run's batches, dealt out
    mine = [i for start in starts for i in range(start, min(start + batch_size, len(records)))]
    feats = extract_features(model, [records[i] for i in mine], device, batch_size, size, root, on_progress,
                             num_workers)
    out = np.empty((len(records), model.config.feat_dim), np.float32)
    for rows, part in all_gather((mine, feats), world):
        out[rows] = part
    return out
