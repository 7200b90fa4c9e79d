"""Records as a torch Dataset: decoded, resized to the model's input size, scaled to [0, 1].

Normalisation is left to the caller (the model config holds mean and std), so methods that work in
the model's input space (PixelFade) and methods that work in pixel space share one loader.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset

from ppvi_cli.data.imageio import ImageReadError, read_image
from ppvi_cli.data.records import INFRARED, Record
from ppvi_cli.data.transforms import augment, resize, to_tensor
from ppvi_cli.errors import PPVIError


def modality_index(record: Record) -> int:
    """0 for visible, 1 for infrared: the stream a dual-stream model routes the image through."""
    return int(record.modality == INFRARED)


class RecordImages(Dataset):
    """Item i -> `(image [3, H, W] float in [0, 1], label, modality index, i)`.

    `labels` maps each pid to a training label (0..C-1); when None every label is -1 (inference).
    With `train_seed` set, images get AGW's augmentation drawn from `(train_seed, epoch, i)`.
    """

    def __init__(self, records: Sequence[Record], size: tuple[int, int], labels: dict[int, int] | None = None,
                 train_seed: int | None = None):
        self.records, self.size, self.labels, self.train_seed = list(records), tuple(size), labels, train_seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        rec = self.records[i]
        try:
            image = resize(to_tensor(read_image(rec.path)), self.size)
        except ImageReadError as exc:
            raise PPVIError(f"cannot read {exc.path}: {exc.reason}") from None
        if self.train_seed is not None:
            gen = torch.Generator().manual_seed(hash((self.train_seed, self.epoch, i)) & 0x7FFFFFFF)
            image = augment(image, gen)
        label = self.labels[rec.pid] if self.labels is not None else -1
        return image, label, modality_index(rec), i


def label_map(records: Sequence[Record]) -> dict[int, int]:
    """Training labels 0..C-1 for the pids of `records`, in pid order."""
    return {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
