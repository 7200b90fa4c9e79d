"""Market-1501 (and layouts that copy it, e.g. DukeMTMC-reID): `PPPP_cCsS_FFFFFF_BB.jpg`.

PPPP is the person id (-1 junk, dropped; 0 distractor, kept as pid 0), C the camera (1-based, kept
as written), S the sequence, FFFFFF the frame, BB the detection box. Every image is visible.
"""

from __future__ import annotations

import re
from pathlib import Path

from ppvi_cli.data.imageio import is_image
from ppvi_cli.data.records import VISIBLE, Dataset, Record
from ppvi_cli.errors import PPVIError

# split folder -> split name
SPLIT_DIRS = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}
LAYOUT = "bounding_box_train/, query/ and/or bounding_box_test/ holding PPPP_cCsS_FFFFFF_BB.jpg files"
JUNK_PID = -1
DISTRACTOR_PID = 0

_NAME = re.compile(r"^(-?\d+)_c(\d+)s(\d+)_(\d+)_(\d+)$")


def parse_name(filename: str) -> tuple[int, int] | None:
    """(pid, camid) of a Market-1501 file name, or None when the name does not follow the scheme."""
    match = _NAME.match(Path(filename).stem)
    return (int(match.group(1)), int(match.group(2))) if match else None


def looks_like(root: Path) -> bool:
    return any((root / d).is_dir() for d in SPLIT_DIRS)


def read(root: Path) -> Dataset:
    """Records of each split folder present, in file-name order.

    Splits: train (bounding_box_train/), query (query/), gallery (bounding_box_test/); a missing
    folder is a note, all three missing is an error. Names off the scheme are skipped with a note.
    """
    present = [d for d in SPLIT_DIRS if (root / d).is_dir()]
    if not present:
        raise PPVIError(f"market1501 layout at {root}: none of {', '.join(d + '/' for d in SPLIT_DIRS)} "
                        f"found; expected {LAYOUT}")
    splits: dict[str, list[Record]] = {}
    notes = [f"{d}/ not present" for d in SPLIT_DIRS if d not in present]
    for folder in present:
        records, skipped, junk = [], [], 0
        names = sorted(p.name for p in (root / folder).iterdir()
                       if p.is_file() and not p.name.startswith(".") and is_image(p.name))
        for name in names:
            parsed = parse_name(name)
            if parsed is None:
                skipped.append(name)
            elif parsed[0] == JUNK_PID:
                junk += 1
            else:
                records.append(Record(f"{folder}/{name}", parsed[0], parsed[1], VISIBLE, root))
        if junk:
            notes.append(f"{folder}/: dropped {junk} junk images (pid -1)")
        distractors = sum(r.pid == DISTRACTOR_PID for r in records)
        if distractors:
            notes.append(f"{folder}/: kept {distractors} distractor images as pid 0")
        if skipped:
            notes.append(f"{folder}/: skipped {len(skipped)} images whose names do not match "
                         f"PPPP_cCsS_FFFFFF_BB.jpg, e.g. {skipped[0]!r}")
        splits[SPLIT_DIRS[folder]] = records
    return Dataset("market1501", root, splits, notes=notes)
