"""Dataset readers: one entry point, `load_dataset`, dispatching to one module per layout.

Each layout module keeps its dataset's own file layout and rules (docs/architecture.md,
"Dataset layouts") and provides `LAYOUT` (the expected tree, for error messages), `read(root, **options) ->
Dataset` and, except folder (the fallback), `looks_like(root)` for auto-detection. Adding a layout is
adding one module and one `FORMATS` line.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from types import ModuleType

from ppvi_cli.data import folder, market1501, regdb, sysu_mm01
from ppvi_cli.data.records import Dataset
from ppvi_cli.data.regdb import read_regdb_split
from ppvi_cli.data.sysu_mm01 import read_sysu_ids
from ppvi_cli.errors import PPVIError
from ppvi_cli.registry import Registry

__all__ = ["FORMATS", "detect_format", "load_dataset", "read_regdb_split", "read_sysu_ids"]

FORMATS: Registry[ModuleType] = Registry("dataset format")
FORMATS.register("market1501")(market1501)
FORMATS.register("sysu")(sysu_mm01)
FORMATS.register("regdb")(regdb)
FORMATS.register("folder")(folder)

# Checked in this order; a root that matches none is read as a folder of <pid>/ folders.
DETECT_ORDER = ("sysu", "regdb", "market1501")

# Written at the root by `ppvi data synth`; an anonymized mirror must carry it along.
KEYPOINTS_FILE = "keypoints.json"


def _check_root(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise PPVIError(f"dataset root {root} does not exist; pass the folder that holds the dataset")
    if not root.is_dir():
        raise PPVIError(f"dataset root {root} is not a directory; pass the folder that holds the dataset")
    return root


def detect_format(root: str | Path) -> str:
    """Guess the layout from the folders at the top of `root` (no image is opened).

    sysu: `cam<N>` folders or `exp/train_id.txt`; regdb: `Visible`, `Thermal` or `idx`;
    market1501: `bounding_box_train`, `bounding_box_test` or `query`; folder otherwise.
    """
    root = _check_root(root)
    return next((name for name in DETECT_ORDER if FORMATS.get(name).looks_like(root)), "folder")


def _check_options(name: str, layout: ModuleType, options: dict) -> None:
    params = inspect.signature(layout.read).parameters.values()
    accepted = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    for key in options:
        if key not in accepted:
            valid = ", ".join(accepted) if accepted else "none"
            raise PPVIError(f"dataset format {name!r} takes no option {key!r} (its options: {valid})")


def load_dataset(root: str | Path, fmt: str = "auto", **options) -> Dataset:
    """Read the dataset at `root` in layout `fmt` (auto, market1501, sysu, regdb or folder).

    `options` go to the reader: regdb takes `trial` (1..10), folder takes `pattern` (a regex with
    optional named groups `camid` and `modality`). Raises `PPVIError` naming what is missing or wrong.
    """
    root, fmt = _check_root(root), fmt.lower()
    name = detect_format(root) if fmt == "auto" else fmt
    layout = FORMATS.get(name)
    _check_options(name, layout, options)
    dataset = layout.read(root, **options)
    if not any(dataset.splits.values()):
        seen = "".join(f"; {note}" for note in dataset.notes)
        if fmt == "auto" and name == "folder":
            raise PPVIError(
                f"no dataset found at {root}: no images in <pid>/ folders, and none of cam1..cam6/ or exp/ "
                "(sysu), Visible/, Thermal/ or idx/ (regdb), bounding_box_train/, query/ or bounding_box_test/ "
                f"(market1501){seen}")
        raise PPVIError(f"{name} dataset at {root} contains no images; expected {layout.LAYOUT}{seen}")
    if (root / KEYPOINTS_FILE).is_file():
        dataset.metadata.append(KEYPOINTS_FILE)
    return dataset
