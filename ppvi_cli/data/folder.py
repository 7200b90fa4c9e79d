"""Any archive sorted by person: `<pid>/<files>`, any image type, subfolders under an id allowed.

Camera and modality are not in this layout, so they default to camid 0 and visible; a `pattern`
(a regex searched in each file name, with optional named groups `camid` and `modality`) can recover
them, e.g. `_c(?P<camid>\\d+)_(?P<modality>rgb|ir)`.
"""

from __future__ import annotations

import re
from pathlib import Path

from ppvi_cli.data.imageio import is_image, list_images
from ppvi_cli.data.records import INFRARED, VISIBLE, Dataset, Record
from ppvi_cli.errors import PPVIError

LAYOUT = "<pid>/<image files> (one folder per identity)"
SPLIT = "all"
DEFAULT_CAMID = 0
VISIBLE_WORDS = ("v", "vis", "visible", "rgb")
INFRARED_WORDS = ("t", "ir", "thermal", "infrared", "nir")
GROUPS = ("camid", "modality")

_INT = re.compile(r"^-?\d+$")


def _compile(pattern: str) -> re.Pattern:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise PPVIError(f"folder pattern {pattern!r} is not a valid regex: {exc}") from None
    unknown = sorted(set(regex.groupindex) - set(GROUPS))
    if unknown:
        raise PPVIError(f"folder pattern {pattern!r} has unknown named groups {', '.join(unknown)}; "
                        f"the groups it may name are {', '.join(GROUPS)}")
    return regex


def _camid(text: str, relpath: str) -> int:
    if not _INT.match(text):
        raise PPVIError(f"folder pattern gives camid {text!r} for {relpath}, not an integer; fix the camid group")
    return int(text)


def _modality(word: str, relpath: str) -> str:
    if word.lower() in VISIBLE_WORDS:
        return VISIBLE
    if word.lower() in INFRARED_WORDS:
        return INFRARED
    raise PPVIError(f"folder pattern gives modality {word!r} for {relpath}, neither visible "
                    f"({'/'.join(VISIBLE_WORDS)}) nor infrared ({'/'.join(INFRARED_WORDS)}); fix the modality group")


def read(root: Path, *, pattern: str | None = None) -> Dataset:
    """One split, `all`, in path order.

    pid = int(folder name); if any id folder name is not an integer, the sorted names map to
    0..n-1 (noted). With `pattern`, files whose names do not match are skipped and noted.
    """
    regex = _compile(pattern) if pattern else None
    id_dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    images = {d: found for d in id_dirs if (found := list_images(root / d))}
    notes = []
    if len(images) < len(id_dirs):
        notes.append(f"{len(id_dirs) - len(images)} folders hold no images")
    loose = sum(p.is_file() and is_image(p.name) for p in root.iterdir())
    if loose:
        notes.append(f"skipped {loose} images at the root, outside any id folder")
    if all(_INT.match(d) for d in images):
        pids = {d: int(d) for d in images}
    else:
        pids = {d: i for i, d in enumerate(images)}
        notes.append(f"id folder names are not all integers: mapped {len(pids)} names in sorted order to "
                     f"pids 0..{len(pids) - 1}, e.g. {next(iter(pids))!r} -> 0")

    records, skipped = [], []
    for d, found in images.items():
        for sub in found:
            relpath = f"{d}/{sub}"
            camid, modality = DEFAULT_CAMID, VISIBLE
            if regex is not None:
                match = regex.search(Path(sub).name)
                if match is None:
                    skipped.append(relpath)
                    continue
                groups = match.groupdict()
                if groups.get("camid") is not None:
                    camid = _camid(groups["camid"], relpath)
                if groups.get("modality") is not None:
                    modality = _modality(groups["modality"], relpath)
            records.append(Record(relpath, pids[d], camid, modality, root))
    if skipped and not records:
        raise PPVIError(f"folder dataset at {root}: none of the {len(skipped)} images matches pattern "
                        f"{pattern!r}, e.g. {skipped[0]!r}")
    if skipped:
        notes.append(f"skipped {len(skipped)} images whose names do not match pattern {pattern!r}, "
                     f"e.g. {skipped[0]!r}")
    return Dataset("folder", root, {SPLIT: records}, notes=notes)
