"""What ReID training reads: the training records, their labels, and images in one or two forms.

Hybrid (SecureReID) training needs each sampled image both raw and anonymized with the *same*
augmentation, so both forms come from one item: `RecordImages` seeds its augmentation by
`(seed, epoch, index)`, and the two forms share seed and index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import Dataset as TorchDataset

from ppvi_cli.data.records import Dataset, Record
from ppvi_cli.data.torch_dataset import RecordImages, label_map, modality_index
from ppvi_cli.errors import PPVIError

# Formats whose training data mixes visible and infrared images; `dual_stream=None` turns it on.
VI_FORMATS = ("sysu", "regdb")


def default_splits(fmt: str) -> tuple[str, ...]:
    """SYSU-MM01 trains on its train and val ids together, as the VI baseline's
    `pre_process_sysu.py` does (395 ids); the other layouts have a single train split."""
    return ("train", "val") if fmt == "sysu" else ("train",)


def training_records(dataset: Dataset, splits: Sequence[str]) -> list[Record]:
    """The records of `splits` (deduplicated, path order); PPVIError when a split is absent or empty."""
    unknown = [s for s in splits if s not in dataset.splits]
    if unknown:
        raise PPVIError(f"{dataset.format} dataset at {dataset.root} has no split {unknown[0]!r} "
                        f"(its splits: {', '.join(dataset.splits)})")
    unique = {r.relpath: r for s in splits for r in dataset.splits[s]}
    if not unique:
        raise PPVIError(f"{dataset.format} dataset at {dataset.root}: the {'+'.join(splits)} split has no images")
    return [unique[k] for k in sorted(unique)]


class TrainImages(TorchDataset):
    """Item i -> `(images [F, 3, H, W] in [0, 1], label, modality index, i)`, F = 1 (raw) or 2 (raw, anon).

    Both forms get the identical augmentation draw (none when `augment` is off); `set_epoch` advances it.
    """

    def __init__(self, records: Sequence[Record], size: tuple[int, int], seed: int, anon_root: Path | None = None,
                 augment: bool = True):
        self.labels = label_map(records)
        train_seed = seed if augment else None
        self.forms = [RecordImages(records, size, self.labels, train_seed=train_seed)]
        if anon_root is not None:
            self.forms.append(RecordImages([r.moved_to(anon_root) for r in records], size, self.labels,
                                           train_seed=train_seed))
        self.records = list(records)

    def set_epoch(self, epoch: int) -> None:
        for form in self.forms:
            form.epoch = epoch

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def label_list(self) -> list[int]:
        return [self.labels[r.pid] for r in self.records]

    def modality_list(self) -> list[int]:
        return [modality_index(r) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        items = [form[i] for form in self.forms]
        _, label, modality, _ = items[0]
        return torch.stack([item[0] for item in items]), label, modality, i
