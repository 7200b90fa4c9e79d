"""A dataset's query and gallery as its protocol needs them (read from disk, checked against the protocol).

Splits per format:
- sysu: query = every infrared image of the test ids, gallery = every visible image of the test ids
  (the protocol draws its single-shot galleries from this pool per trial).
- regdb: one trial's test lists; regdb-v2t queries the visible list against the thermal one,
  regdb-t2v the reverse.
- market1501: `query/` and `bounding_box_test/` when present; otherwise (the shared subset has only
  `bounding_box_train/`) `held_out_split` over the train images. folder: `held_out_split` too; when
  the folder has no camera ids its queries get camid -1 (unknown), else the market protocol's
  same-camera junk rule would discard every match.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ppvi_cli.data.records import INFRARED, VISIBLE, Record
from ppvi_cli.data.regdb import DEFAULT_TRIAL
from ppvi_cli.errors import PPVIError

PROTOCOL_FORMATS = {"market": ("market1501", "folder"), "sysu-all": ("sysu",), "sysu-indoor": ("sysu",),
                    "regdb-v2t": ("regdb",), "regdb-t2v": ("regdb",)}
DEFAULT_TEST_IDS = 201  # issue 4's split of the 501-id Market subset: 300 train ids, 201 test ids
UNKNOWN_CAMID = -1  # folder queries without camera ids: no gallery image is same-camera junk


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


def eval_split(data_root: str | Path, fmt: str = "auto", *, protocol: str | None = None, trial: int = DEFAULT_TRIAL,
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
