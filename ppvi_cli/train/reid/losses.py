"""AGW's ReID losses: label-smoothed identity loss, weighted-regularisation triplet, center loss.

SecureReID trains its ReID model with `CE-LS(logits) + WRT(global) + 0.0005 * center(global)`,
where `global` is the pooled feature before the BNNeck and `logits` come after it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy against `(1 - eps) * one_hot + eps / C` targets (Szegedy et al.).

    `forward(logits [B, C], labels [B] long) -> scalar`, the batch mean. Smoothing keeps the
    classifier from growing over-confident on the training ids, which do not appear at test time.
    """

    def __init__(self, num_classes: int, epsilon: float = 0.1):
        super().__init__()
        self.num_classes = num_classes
        self.epsilon = epsilon

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_probs = F.log_softmax(logits, dim=1)
        nll = -log_probs.gather(1, labels[:, None]).squeeze(1)
        uniform = -log_probs.mean(dim=1)
        return ((1.0 - self.epsilon) * nll + self.epsilon * uniform).mean()


def euclidean_distances(feats: torch.Tensor) -> torch.Tensor:
    """`[N, D] -> [N, N]` Euclidean distances, clamped at 1e-6 so the root keeps a finite gradient."""
    squared = feats.pow(2).sum(dim=1)
    dist2 = squared[:, None] + squared[None, :] - 2.0 * feats @ feats.t()
    return dist2.clamp(min=1e-12).sqrt()


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row softmax over the entries where `mask` is true; all-zero weights on rows with none.

    The max is taken over the masked entries only, so large distances do not underflow every weight.
    """
    masked = scores.masked_fill(~mask, float("-inf"))
    top = masked.max(dim=1, keepdim=True).values.detach()
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    weights = torch.exp(masked - top)
    return weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-12)


class WeightedRegularizedTriplet(nn.Module):
    """AGW's weighted-regularisation triplet loss (WRT), which has no margin to tune.

    For each anchor the positive distance is a softmax(d)-weighted mean over its positives (the far
    ones count most) and the negative distance a softmax(-d)-weighted mean over its negatives (the
    close ones count most); the loss is the batch mean of `softplus(d_ap - d_an)`.
    `forward(feats [B, D], labels [B]) -> scalar`. The anchor itself is among its positives, as in AGW.
    Unlike AGW's code, the softmax is stabilised by the max over the masked entries only, so weights
    do not underflow (and d_an collapse to 0) when distances reach the hundreds.
    """

    def forward(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        dist = euclidean_distances(feats)
        same = labels[:, None] == labels[None, :]
        d_ap = (dist * _masked_softmax(dist, same)).sum(dim=1)
        d_an = (dist * _masked_softmax(-dist, ~same)).sum(dim=1)
        return F.softplus(d_ap - d_an).mean()


class CenterLoss(nn.Module):
    """Mean squared distance of each feature to its identity's learned center (Wen et al.).

    `forward(feats [B, D], labels [B]) -> scalar`. The centers are parameters of this module; AGW
    updates them with their own SGD optimizer (lr 0.5), which the training loop sets up.
    """

    def __init__(self, num_classes: int, feat_dim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (feats - self.centers[labels]).pow(2).sum(dim=1).mean()


class AGWLoss(nn.Module):
    """`CE-LS(logits) + WRT(global_feat) + center_weight * center(global_feat)`.

    `forward(global_feat [B, D], logits [B, C], labels [B])` returns the total (with gradient) and
    its parts `{"id", "triplet", "center"}` as detached scalars for logging (unweighted).
    """

    def __init__(self, num_classes: int, feat_dim: int, epsilon: float = 0.1, center_weight: float = 0.0005):
        super().__init__()
        self.identity = CrossEntropyLabelSmooth(num_classes, epsilon)
        self.triplet = WeightedRegularizedTriplet()
        self.center = CenterLoss(num_classes, feat_dim)
        self.center_weight = center_weight

    def forward(self, global_feat: torch.Tensor, logits: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {
            "id": self.identity(logits, labels),
            "triplet": self.triplet(global_feat, labels),
            "center": self.center(global_feat, labels),
        }
        total = parts["id"] + parts["triplet"] + self.center_weight * parts["center"]
        return total, {k: v.detach() for k, v in parts.items()}
