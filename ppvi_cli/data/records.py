"""The dataset model: a list of records `(path, pid, camid, modality)` grouped into splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

VISIBLE = "visible"
INFRARED = "infrared"
MODALITIES = (VISIBLE, INFRARED)


@dataclass(frozen=True, order=True)
class Record:
    """One image. `path` is absolute; `relpath` is its place under the dataset root (the mirror key)."""

    relpath: str
    pid: int
    camid: int
    modality: str
    root: Path = field(compare=False)

    @property
    def path(self) -> Path:
        return self.root / self.relpath

    def moved_to(self, root: str | Path) -> "Record":
        """The same record under another root (its anonymized or recovered twin)."""
        return Record(self.relpath, self.pid, self.camid, self.modality, Path(root))


@dataclass
class Dataset:
    """A dataset as its reader sees it.

    `splits` maps a split name (train, query, gallery, test, ...) to its records; a record may
    appear in several splits. `metadata` lists the non-image files (split lists, keypoints) that an
    anonymized mirror copies so it is itself a readable dataset of the same format.
    """

    format: str
    root: Path
    splits: dict[str, list[Record]]
    metadata: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def records(self) -> list[Record]:
        """Every distinct image of the dataset, in path order."""
        unique = {r.relpath: r for split in self.splits.values() for r in split}
        return [unique[k] for k in sorted(unique)]

    def summary(self) -> dict:
        """Ids, images, cameras and modalities per split (what `ppvi data check` prints)."""
        rows = {}
        for name, recs in self.splits.items():
            rows[name] = {
                "ids": len({r.pid for r in recs}),
                "images": len(recs),
                "cameras": sorted({r.camid for r in recs}),
                "modalities": {m: sum(r.modality == m for r in recs) for m in sorted({r.modality for r in recs})},
            }
        return {"format": self.format, "root": str(self.root), "splits": rows, "notes": list(self.notes)}
