"""SYSU-MM01: `cam{1..6}/{pid:04d}/{nnnn}.jpg`, cameras 3 and 6 infrared, the others visible.

The train/val/test ids come from `exp/{train,val,test}_id.txt` (one line of comma-separated ints),
as in the official release; the synthetic generator writes the same layout.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from ppvi_cli.data.imageio import is_image
from ppvi_cli.data.records import INFRARED, VISIBLE, Dataset, Record
from ppvi_cli.errors import PPVIError

CAMERAS = (1, 2, 3, 4, 5, 6)
INFRARED_CAMERAS = (3, 6)
SPLITS = ("train", "val", "test")
LAYOUT = "cam1..cam6/<pid:04d>/<n>.jpg and exp/{train,val,test}_id.txt"

_CAM_DIR = re.compile(r"^cam(\d+)$")


def id_file(split: str) -> str:
    """Path of a split's id list, relative to the root."""
    return f"exp/{split}_id.txt"


def _camera_dirs(root: Path) -> dict[int, Path]:
    return {int(m.group(1)): p for p in root.iterdir() if p.is_dir() and (m := _CAM_DIR.match(p.name))}


def modality_of(relpath: str) -> str:
    """The modality a path implies by its camera folder (for images outside the id lists)."""
    match = _CAM_DIR.match(relpath.split("/", 1)[0])
    return INFRARED if match and int(match.group(1)) in INFRARED_CAMERAS else VISIBLE


def looks_like(root: Path) -> bool:
    return bool(_camera_dirs(root)) or (root / id_file("train")).is_file()


def _parse_ids(root: Path, relpath: str) -> list[int]:
    tokens = [t for t in re.split(r"[,\s]+", (root / relpath).read_text(encoding="utf-8-sig")) if t]
    for token in tokens:
        if not token.isdigit():
            raise PPVIError(f"sysu layout at {root}: {relpath} holds {token!r}, not an id; "
                            "expected one line of comma-separated integers")
    return [int(t) for t in tokens]


def read_sysu_ids(root: str | Path) -> dict[str, list[int]]:
    """The official id lists, `{"train": [...], "val": [...], "test": [...]}`, in file order."""
    root = Path(root)
    missing = [id_file(s) for s in SPLITS if not (root / id_file(s)).is_file()]
    if missing:
        raise PPVIError(f"sysu layout at {root}: missing {', '.join(missing)}; expected {LAYOUT}")
    return {s: _parse_ids(root, id_file(s)) for s in SPLITS}


def read(root: Path) -> Dataset:
    """Splits train, val and test; records ordered by pid, then camera, then file name.

    That order is the one the SYSU-MM01 evaluation code walks when it draws its random gallery.
    camid is the camera number (1..6). Ids listed without images are a note, not an error.
    """
    cams = _camera_dirs(root)
    missing = [id_file(s) for s in SPLITS if not (root / id_file(s)).is_file()]
    if not any(c in CAMERAS for c in cams):
        missing.append("cam1..cam6/ (no camera folders, so no images)")
    if missing:
        raise PPVIError(f"sysu layout at {root}: missing {', '.join(missing)}; expected {LAYOUT}")
    ids = read_sysu_ids(root)
    notes = [f"cam{c}/ not present" for c in CAMERAS if c not in cams]
    notes += [f"ignored cam{c}/ (SYSU-MM01 has cam1..cam6)" for c in sorted(cams) if c not in CAMERAS]

    by_pid: dict[int, list[Record]] = defaultdict(list)
    odd_dirs = []
    for cam in (c for c in CAMERAS if c in cams):
        modality = INFRARED if cam in INFRARED_CAMERAS else VISIBLE
        for pid_dir in sorted(p for p in cams[cam].iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not pid_dir.name.isdigit():
                odd_dirs.append(f"cam{cam}/{pid_dir.name}")
                continue
            names = sorted(f.name for f in pid_dir.iterdir()
                           if f.is_file() and is_image(f.name) and not f.name.startswith("."))
            for name in names:
                by_pid[int(pid_dir.name)].append(
                    Record(f"cam{cam}/{pid_dir.name}/{name}", int(pid_dir.name), cam, modality, root))
    if odd_dirs:
        notes.append(f"skipped {len(odd_dirs)} folders whose names are not ids, e.g. {odd_dirs[0]!r}")
    if not by_pid:
        raise PPVIError(f"sysu layout at {root}: the camera folders hold no images; expected {LAYOUT}")

    splits = {}
    for split, listed in ids.items():
        wanted = sorted(set(listed))
        splits[split] = [r for pid in wanted for r in by_pid.get(pid, [])]
        without = sum(pid not in by_pid for pid in wanted)
        if without:
            notes.append(f"{split}: {without} of {len(wanted)} ids listed in {id_file(split)} have no images")
    unlisted = set(by_pid) - {pid for listed in ids.values() for pid in listed}
    if unlisted:
        notes.append(f"{len(unlisted)} ids with images are in no exp/*_id.txt and were left out, "
                     f"e.g. pid {min(unlisted)}")
    if not any(splits.values()):
        raise PPVIError(f"sysu layout at {root}: none of the ids listed in exp/{{train,val,test}}_id.txt "
                        f"has images (found image folders for {len(by_pid)} other ids)")
    metadata = sorted(f"exp/{p.name}" for p in (root / "exp").iterdir()
                      if p.is_file() and not p.name.startswith("."))
    return Dataset("sysu", root, splits, metadata=metadata, notes=notes)
