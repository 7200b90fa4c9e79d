"""AGW losses against straightforward per-anchor references written here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ppvi_cli.train.reid.losses import AGWLoss, CenterLoss, CrossEntropyLabelSmooth, WeightedRegularizedTriplet


def _batch(seed: int = 0, n_ids: int = 4, per_id: int = 3, dim: int = 8, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_ids).repeat_interleave(per_id)
    feats = scale * torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    return feats, labels


def ref_label_smooth(logits, labels, num_classes, eps):
    total = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        m = max(row)
        log_z = m + math.log(sum(math.exp(v - m) for v in row))
        for c, v in enumerate(row):
            target = (1 - eps) * (c == y) + eps / num_classes
            total -= target * (v - log_z)
    return total / len(labels)


def ref_wrt(feats, labels):
    x = feats.tolist()
    y = labels.tolist()
    n = len(x)
    dist = [[math.sqrt(max(sum((a - b) ** 2 for a, b in zip(x[i], x[j])), 1e-12)) for j in range(n)] for i in range(n)]
    total = 0.0
    for i in range(n):
        pos = [dist[i][j] for j in range(n) if y[j] == y[i]]
        neg = [dist[i][j] for j in range(n) if y[j] != y[i]]
        wp = [math.exp(d - max(pos)) for d in pos]
        wn = [math.exp(-d + min(neg)) for d in neg]
        d_ap = sum(w * d for w, d in zip(wp, pos)) / sum(wp)
        d_an = sum(w * d for w, d in zip(wn, neg)) / sum(wn)
        total += math.log1p(math.exp(d_ap - d_an))
    return total / n


def ref_center(feats, labels, centers):
    total = 0.0
    for f, y in zip(feats.tolist(), labels.tolist()):
        total += sum((a - b) ** 2 for a, b in zip(f, centers[y].tolist()))
    return total / len(labels)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_reference(eps):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3
    labels = torch.tensor([0, 1, 4, 4, 2, 3])
    got = CrossEntropyLabelSmooth(5, eps)(logits, labels).item()
    assert got == pytest.approx(ref_label_smooth(logits, labels, 5, eps), rel=1e-10)


def test_label_smoothing_equals_torch_label_smoothing():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(8, 7, generator=g)
    labels = torch.randint(0, 7, (8,), generator=g)
    torch.testing.assert_close(CrossEntropyLabelSmooth(7, 0.1)(logits, labels),
                               F.cross_entropy(logits, labels, label_smoothing=0.1))


def test_label_smoothing_zero_epsilon_is_cross_entropy():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(8, 7, generator=g)
    labels = torch.randint(0, 7, (8,), generator=g)
    torch.testing.assert_close(CrossEntropyLabelSmooth(7, 0.0)(logits, labels), F.cross_entropy(logits, labels))


@pytest.mark.parametrize("scale", [0.1, 1.0, 30.0])
def test_wrt_matches_reference(scale):
    feats, labels = _batch(seed=3, scale=scale)
    got = WeightedRegularizedTriplet()(feats, labels).item()
    assert got == pytest.approx(ref_wrt(feats, labels), rel=1e-9, abs=1e-12)


def test_wrt_large_distances_keep_negative_weights():
    """Distances in the hundreds (un-normalised 2048-d features) must not underflow to d_an = 0."""
    feats, labels = _batch(seed=4, scale=100.0, dim=16)
    got = WeightedRegularizedTriplet()(feats, labels).item()
    assert got == pytest.approx(ref_wrt(feats, labels), rel=1e-9, abs=1e-12)


def test_wrt_is_small_for_well_separated_ids_and_large_for_swapped_ones():
    labels = torch.tensor([0, 0, 1, 1])
    tight = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0]])
    loss = WeightedRegularizedTriplet()
    assert loss(tight, labels).item() < 1e-3
    assert loss(tight, torch.tensor([0, 1, 0, 1])).item() > 9.0


def test_center_loss_matches_reference():
    feats, labels = _batch(seed=5)
    center = CenterLoss(4, feats.shape[1]).double()
    got = center(feats, labels).item()
    assert got == pytest.approx(ref_center(feats, labels, center.centers.detach()), rel=1e-10)


def test_agw_loss_total_and_parts():
    feats, labels = _batch(seed=6)
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(len(labels), 4, generator=g, dtype=torch.float64)
    agw = AGWLoss(4, feats.shape[1]).double()
    total, parts = agw(feats, logits, labels)
    assert set(parts) == {"id", "triplet", "center"}
    assert parts["id"].item() == pytest.approx(ref_label_smooth(logits, labels, 4, 0.1), rel=1e-10)
    assert parts["triplet"].item() == pytest.approx(ref_wrt(feats, labels), rel=1e-9)
    assert parts["center"].item() == pytest.approx(ref_center(feats, labels, agw.center.centers.detach()), rel=1e-10)
    expected = parts["id"] + parts["triplet"] + 0.0005 * parts["center"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-12)
    assert all(not p.requires_grad for p in parts.values())


def test_agw_loss_gradients_are_finite_including_duplicates():
    """Identical features (zero distances, the clamp at the root) must not give NaN gradients."""
    feats, labels = _batch(seed=8, dim=6)
    feats = feats.float()
    feats[1] = feats[0]
    feats.requires_grad_(True)
    logits = torch.randn(len(labels), 4, requires_grad=True)
    agw = AGWLoss(4, 6)
    total, _ = agw(feats, logits, labels)
    total.backward()
    for grad in (feats.grad, logits.grad, agw.center.centers.grad):
        assert grad is not None and torch.isfinite(grad).all()
    assert feats.grad.abs().sum() > 0 and logits.grad.abs().sum() > 0


def test_wrt_without_negatives_is_finite():
    feats, _ = _batch(seed=9, n_ids=1, per_id=4)
    feats.requires_grad_(True)
    loss = WeightedRegularizedTriplet()(feats, torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()
