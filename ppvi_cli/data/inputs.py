"""The records of any input folder, and an account of every file in it.

A known dataset layout (detected or named) is read with its reader, so pid, camera and modality
travel with each file; any other folder is walked and every image counts as visible with pid -1.
For protection, every image file under the root is accounted for: images a reader leaves out of its
splits (ids missing from SYSU's exp/ lists, Market's junk pid -1 and names off the scheme, RegDB
images in no idx list, loose files) are records too (pid -1, the modality their layout implies),
because a protected mirror that lacks them leaves those people's raw images as the only copy a user
could publish. Image files that cannot be read at all (FIFOs, devices, unsupported formats) are
refused with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ppvi_cli.data.imageio import scan_tree
from ppvi_cli.data.records import VISIBLE, Record
from ppvi_cli.errors import PPVIError

OUTSIDE_PID = -1  # pid of an image outside the dataset's splits (protected, never evaluated)


@dataclass
class Inputs:
    """What a command reads from an input root.

    `records`: every image to process, in path order; `metadata`: non-image files a mirror copies
    (split lists, keypoints); `format`: the layout used ("any" for a plain walk); `outside_splits`:
    relpaths of the records no split lists; `refused` / `ignored`: `[{"path", "reason"}]` from the walk.
    """

    records: list[Record]
    metadata: list[str]
    format: str
    outside_splits: list[str] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)
    ignored: list[dict] = field(default_factory=list)


def check_mirror(records: Sequence[Record], anon_root: str | Path) -> None:
    """PPVIError unless every record has its anonymized twin at the same relative path under `anon_root`.

    Checked up front (one stat per file) so a half-anonymized mirror fails before any model work.
    """
    anon_root = Path(anon_root)
    if not anon_root.is_dir():
        raise PPVIError(f"--anon {anon_root} is not a directory; pass the output folder of `ppvi anonymize`")
    missing = [r.relpath for r in records if not (anon_root / r.relpath).is_file()]
    if missing:
        raise PPVIError(f"--anon {anon_root} lacks {len(missing)} of {len(records)} images (e.g. {missing[0]}): "
                        "no anonymized twin at the same path; anonymize the whole dataset into it "
                        "(`ppvi anonymize` resumes) or pass the matching folder")


def collect_inputs(root: str | Path, fmt: str = "auto") -> Inputs:
    """Every image under `root` as a record (the reader's where it has one), and the rest accounted for."""
    from ppvi_cli.data.readers import FORMATS, detect_format, load_dataset

    root = Path(root)
    if not root.is_dir():
        raise PPVIError(f"{root} is not a directory" if root.exists() else f"{root} does not exist")
    tree = scan_tree(root)
    resolved = detect_format(root) if fmt == "auto" else fmt
    if fmt == "auto" and resolved == "folder":
        if not tree.images and not tree.refused:
            raise PPVIError(f"{root} holds no images (.jpg, .png, .bmp, ...)")
        records = [Record(rel, OUTSIDE_PID, 0, VISIBLE, root) for rel in tree.images]
        return Inputs(records, [], "any", [], tree.refused, tree.ignored)
    dataset = load_dataset(root, resolved)
    known = {r.relpath: r for r in dataset.records()}
    modality_of = getattr(FORMATS.get(resolved), "modality_of", lambda relpath: VISIBLE)
    outside = [rel for rel in tree.images if rel not in known]
    records = sorted([*known.values(), *(Record(rel, OUTSIDE_PID, 0, modality_of(rel), root) for rel in outside)])
    metadata = set(dataset.metadata)
    ignored = [item for item in tree.ignored if item["path"] not in metadata]
    return Inputs(records, list(dataset.metadata), resolved, outside, tree.refused, ignored)
