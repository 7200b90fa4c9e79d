"""PK sampling: every batch holds P identities x K images of each modality; DDP ranks split evenly."""

from collections import Counter

import numpy as np
import pytest

from ppvi_cli.errors import PPVIError
from ppvi_cli.train.reid.sampler import PKBatchSampler


def vi_labels(ids=10, per=5):
    labels, mods = [], []
    for pid in range(ids):
        for mod in (0, 1):
            labels += [pid] * (per if mod == 0 else 2)  # only 2 infrared images: sampled with replacement
            mods += [mod] * (per if mod == 0 else 2)
    return np.array(labels), np.array(mods)


def test_vi_batches_hold_p_ids_times_k_per_modality():
    labels, mods = vi_labels()
    sampler = PKBatchSampler(labels, mods, p=4, k=3, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2
    for batch in batches:
        assert len(batch) == 4 * 3 * 2
        per = Counter((labels[i], mods[i]) for i in batch)
        assert len({pid for pid, _ in per}) == 4 and set(per.values()) == {3}
        assert list(mods[batch]) == [0] * 12 + [1] * 12  # visible half first, then infrared


def test_epochs_differ_and_replay_identically():
    labels, mods = vi_labels()
    a = PKBatchSampler(labels, mods, p=2, k=2, seed=5)
    b = PKBatchSampler(labels, mods, p=2, k=2, seed=5)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(b) == list(a)


def test_ranks_partition_the_batches_evenly():
    labels = np.repeat(np.arange(11), 4)
    full = list(PKBatchSampler(labels, None, p=2, k=2, seed=0))
    ranks = [list(PKBatchSampler(labels, None, p=2, k=2, seed=0, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    assert ranks[0] + ranks[1] == full[0:4:2] + full[1:4:2]


def test_too_few_identities_is_a_clear_error():
    with pytest.raises(PPVIError, match="at least P=8 identities"):
        PKBatchSampler(np.repeat(np.arange(3), 2), None, p=8, k=2)
