"""PK batches for ReID training: P identities x K images each (per modality for VI data).

Triplet losses need several images of each identity in every batch; cross-modality training also
needs both modalities of each identity, so a VI batch holds P ids x K visible + P ids x K infrared.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np

from ppvi_cli.errors import PPVIError


class PKBatchSampler:
    """Yields lists of dataset indices; usable as a DataLoader `batch_sampler`.

    Args:
        labels: `[N]` training label of each item.
        modalities: `[N]` 0 visible / 1 infrared, or None for single-modality data.
        p, k: identities per batch and images per identity (per modality when `modalities` is given).
        seed: the epoch's order is drawn from `seed + epoch` (call `set_epoch`), so resumed runs
            replay the same batches.
        rank, world_size: under DDP each rank takes every `world_size`-th batch (all ranks get as many).

    An identity with fewer than K images (in a modality) is sampled with replacement.
    """

    def __init__(self, labels: Sequence[int], modalities: Sequence[int] | None, p: int, k: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.p, self.k, self.seed, self.rank, self.world_size = p, k, seed, rank, world_size
        self.epoch = 0
        mods = np.zeros(len(labels), int) if modalities is None else np.asarray(modalities)
        self.modal_groups = sorted(set(mods.tolist()))
        self.index: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
        by_key: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, (label, mod) in enumerate(zip(labels, mods)):
            by_key[(int(label), int(mod))].append(i)
        for (label, mod), items in by_key.items():
            self.index[label][mod] = np.asarray(items)
        self.ids = sorted(l for l, groups in self.index.items() if len(groups) == len(self.modal_groups))
        if len(self.ids) < p:
            raise PPVIError(f"PK sampling needs at least P={p} identities with images in every modality; "
                            f"the training split has {len(self.ids)}: lower --p or use more data")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(self.ids)
        batches = []
        for start in range(0, len(order) - self.p + 1, self.p):
            batch = []
            for mod in self.modal_groups:
                for label in order[start:start + self.p]:
                    items = self.index[int(label)][mod]
                    batch += rng.choice(items, size=self.k, replace=len(items) < self.k).tolist()
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()[: len(self) * self.world_size]  # equal counts, or DDP ranks hang
        return iter(batches[self.rank::self.world_size])

    def __len__(self) -> int:
        return (len(self.ids) // self.p) // self.world_size
