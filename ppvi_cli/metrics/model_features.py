"""A dataset's query and gallery as its protocol needs them, their features from a model, and a cache.

Splits per format:
- sysu: query = every infrared image of the test ids, gallery = every visible image of the test ids
  (the protocol draws its single-shot galleries from this pool per trial).
- regdb: one trial's test lists; regdb-v2t queries the visible list against the thermal one,
  regdb-t2v the reverse.
- market1501: `query/` and `bounding_box_test/` when present; otherwise (the shared subset has only
  `bounding_box_train/`) `held_out_split` over the train images. folder: `held_out_split` too; when
  the folder has no camera ids its queries get camid -1 (unknown), else the market protocol's
  same-camera junk rule would discard every match.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ppvi_cli.data.records import INFRARED, VISIBLE, Record
from ppvi_cli.errors import PPVIError
from ppvi_cli.metrics.features import FeatureSet, load_features, save_features

PROTOCOL_FORMATS = {"market": ("market1501", "folder"), "sysu-all": ("sysu",), "sysu-indoor": ("sysu",),
                    "regdb-v2t": ("regdb",), "regdb-t2v": ("regdb",)}
DEFAULT_TEST_IDS = 201  # issue 4's split of the 501-id Market subset: 300 train ids, 201 test ids
UNKNOWN_CAMID = -1  # folder queries without camera ids: no gallery image is same-camera junk
CACHE_VERSION = 1  # bump when the cached arrays would change for the same inputs


def protocols_for(fmt: str) -> list[str]:
    """The protocols whose query/gallery a dataset format provides."""
    return [p for p, formats in PROTOCOL_FORMATS.items() if fmt in formats]


def check_protocol_format(protocol: str, fmt: str) -> None:
    """Raise PPVIError when `protocol` cannot score a dataset of layout `fmt`."""
    if protocol not in PROTOCOL_FORMATS:
        raise PPVIError(f"unknown --protocol {protocol!r} (choices: {', '.join(PROTOCOL_FORMATS)})")
    if fmt not in PROTOCOL_FORMATS[protocol]:
        raise PPVIError(f"--protocol {protocol} does not fit --format {fmt}: {fmt} data is scored with "
                        f"{' or '.join(protocols_for(fmt)) or 'no protocol'}")


def held_out_split(records: Sequence[Record], test_ids: int = DEFAULT_TEST_IDS,
                   distractor_pid: int | None = None) -> dict[str, list[Record]]:
    """An id-disjoint train / query / gallery split for data that ships no test split.

    Test ids are the last `test_ids` pids in ascending order (all of them when there are fewer);
    for each test id and each of its cameras the first image in path order is a query, the id's
    other images form the gallery. Images of `distractor_pid` (Market's pid 0) join the gallery.
    Returns `{"train", "query", "gallery"}`, each in path order.
    """
    if isinstance(test_ids, bool) or not isinstance(test_ids, int) or test_ids < 1:
        raise PPVIError(f"--test-ids must be a positive number of identities, got {test_ids!r}")
    ordered = sorted(records, key=lambda r: r.relpath)
    ids = sorted({r.pid for r in ordered if r.pid != distractor_pid})
    test = set(ids[-test_ids:])
    split: dict[str, list[Record]] = {"train": [], "query": [], "gallery": []}
    seen: set[tuple[int, int]] = set()
    for rec in ordered:
        if rec.pid == distractor_pid:
            split["gallery"].append(rec)
        elif rec.pid not in test:
            split["train"].append(rec)
        elif (rec.pid, rec.camid) not in seen:
            seen.add((rec.pid, rec.camid))
            split["query"].append(rec)
        else:
            split["gallery"].append(rec)
    return split


@dataclass
class EvalSplit:
    """The records scored as queries and as gallery, and what chose them (for the cache key and JSON)."""

    format: str
    root: Path
    query: list[Record]
    gallery: list[Record]
    params: dict
    notes: list[str] = field(default_factory=list)

    @property
    def protocols(self) -> list[str]:
        """Protocols this query/gallery can be evaluated with."""
        direction = self.params.get("direction")
        return [p for p in protocols_for(self.format) if direction is None or p.endswith(direction)]


def eval_split(data_root: str | Path, fmt: str = "auto", *, protocol: str | None = None, trial: int = 1,
               test_ids: int = DEFAULT_TEST_IDS, pattern: str | None = None) -> EvalSplit:
    """Read the dataset at `data_root` and pick its query and gallery (see the module docstring).

    `protocol` is checked against the format and picks RegDB's direction (default regdb-v2t);
    `trial` is RegDB's (1..10), `test_ids` the held-out split's, `pattern` the folder reader's.
    """
    from ppvi_cli.data import folder
    from ppvi_cli.data.readers import FORMATS, detect_format, load_dataset

    fmt = detect_format(data_root) if fmt == "auto" else fmt.lower()
    FORMATS.get(fmt)  # an unknown name lists the valid ones
    if protocol is not None:
        check_protocol_format(protocol, fmt)
    options = {"trial": trial} if fmt == "regdb" else {"pattern": pattern} if fmt == "folder" and pattern else {}
    dataset = load_dataset(data_root, fmt, **options)
    notes = list(dataset.notes)
    params: dict = {"format": fmt}
    if fmt == "sysu":
        test = dataset.splits["test"]
        query = [r for r in test if r.modality == INFRARED]
        gallery = [r for r in test if r.modality == VISIBLE]
        params["split"] = "exp/test_id.txt: infrared queries, visible pool"
    elif fmt == "regdb":
        direction = "t2v" if protocol == "regdb-t2v" else "v2t"
        test = dataset.splits["test"]
        by_modality = {m: [r for r in test if r.modality == m] for m in (VISIBLE, INFRARED)}
        q_mod, g_mod = (VISIBLE, INFRARED) if direction == "v2t" else (INFRARED, VISIBLE)
        query, gallery = by_modality[q_mod], by_modality[g_mod]
        params.update(split=f"idx/test_*_{trial}.txt", trial=trial, direction=direction)
    elif fmt == "market1501" and dataset.splits.get("query") and dataset.splits.get("gallery"):
        query, gallery = dataset.splits["query"], dataset.splits["gallery"]
        params["split"] = "query/ and bounding_box_test/"
    elif fmt == "market1501":
        if dataset.splits.get("query") or dataset.splits.get("gallery"):
            raise PPVIError(f"market1501 at {data_root}: query/ and bounding_box_test/ must both hold images "
                            "(or both be absent, to split bounding_box_train/ by id)")
        held = held_out_split(dataset.splits["train"], test_ids, distractor_pid=0)
        query, gallery = held["query"], held["gallery"]
        params.update(split="held-out ids of bounding_box_train/", test_ids=test_ids)
    else:  # folder
        held = held_out_split(dataset.splits[folder.SPLIT], test_ids)
        query, gallery = held["query"], held["gallery"]
        params.update(split="held-out ids", test_ids=test_ids, pattern=pattern)
        if all(r.camid == folder.DEFAULT_CAMID for r in dataset.splits[folder.SPLIT]):
            query = [dataclasses.replace(r, camid=UNKNOWN_CAMID) for r in query]
            notes.append(f"no camera ids (pass --pattern with a camid group to read them): queries get camid "
                         f"{UNKNOWN_CAMID} so the market protocol's same-camera junk rule discards no match")
    for side, recs in (("query", query), ("gallery", gallery)):
        if not recs:
            raise PPVIError(f"{fmt} data at {data_root} gives an empty {side} ({params['split']}); "
                            "check the dataset with `ppvi data check`")
    return EvalSplit(fmt, Path(data_root), query, gallery, params, notes)


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
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    *,
    model_sha256: str | None = None,
    protocol: str | None = None,
    trial: int = 1,
    test_ids: int = DEFAULT_TEST_IDS,
    pattern: str | None = None,
    input_size: tuple[int, int] | None = None,
    num_workers: int = 0,
    on_total: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    world=None,
) -> ModelFeatures:
    """Query and gallery features of `model` on a dataset, raw and (with `anon_root`) anonymized.

    Rows follow `eval_split`'s record order; raw and anon rows are the same images; paths are
    relative to the dataset root. `model_sha256` (the checkpoint's) saves hashing the weights.
    With `cache_dir`, features are reused when model, split and every image's bytes are unchanged
    (the cache holds identity features and image paths: keep it private, or pass no cache_dir).
    `on_total(n)` gets the number of images to extract (0 on a hit), `on_progress(k)` each batch.
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
            if on_total:
                on_total(0)
            return ModelFeatures(dataclasses.replace(hit, source=source), split, "hit", cache_path, model_sha256)
    if on_total:
        on_total(len(records) * (1 if anon_root is None else 2))
    nq = len(split.query)
    forms = {"raw": None} | ({"anon": anon_root} if anon_root is not None else {})
    query, gallery = {}, {}
    for form, root in forms.items():
        feats = _extract(model, records, device, batch_size, size, root, on_progress, num_workers, world)
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
