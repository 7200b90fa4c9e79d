"""The records of any input folder: a known dataset layout through its reader, or a plain walk."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ppvi_cli.data.imageio import list_images
from ppvi_cli.data.records import VISIBLE, Record
from ppvi_cli.errors import PPVIError


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


def collect_inputs(root: str | Path, fmt: str = "auto") -> tuple[list[Record], list[str], str]:
    """Records to process, the dataset's metadata files, and the format used.

    A known layout (detected or named) is read with its reader, so pid, camera and modality travel
    with each file; any other folder is walked and every image counts as visible with pid -1.
    """
    from ppvi_cli.data.readers import detect_format, load_dataset

    root = Path(root)
    if not root.is_dir():
        raise PPVIError(f"{root} is not a directory" if root.exists() else f"{root} does not exist")
    resolved = detect_format(root) if fmt == "auto" else fmt
    if fmt == "auto" and resolved == "folder":
        records = [Record(rel, -1, 0, VISIBLE, root) for rel in list_images(root)]
        if not records:
            raise PPVIError(f"{root} holds no images (.jpg, .png, .bmp, ...)")
        return records, [], "any"
    dataset = load_dataset(root, resolved)
    return dataset.records(), list(dataset.metadata), resolved
