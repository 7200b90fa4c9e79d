"""The AGW pieces around a backbone: non-local attention, GeM pooling and the BNNeck head.

AGW (Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook") is the ReID
model SecureReID trains jointly and PixelFade and PPA use as the authorized / teacher model.
"""

from __future__ import annotations

import torch
from torch import nn


class NonLocal(nn.Module):
    """Embedded-dot-product non-local block with a zero-initialised residual branch.

    `[B, C, H, W] -> [B, C, H, W]`. The affinity of every position pair is divided by the number of
    positions (not a softmax), as in AGW. The output BatchNorm starts at zero weight, so a new block
    is the identity and an ImageNet backbone keeps its behaviour at the start of training.
    """

    def __init__(self, channels: int, reduction: int = 2):
        super().__init__()
        inner = max(1, channels // reduction)
        self.inner = inner
        self.theta = nn.Conv2d(channels, inner, kernel_size=1)
        self.phi = nn.Conv2d(channels, inner, kernel_size=1)
        self.g = nn.Conv2d(channels, inner, kernel_size=1)
        self.out = nn.Sequential(nn.Conv2d(inner, channels, kernel_size=1), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        theta = self.theta(x).flatten(2).transpose(1, 2)  # [B, HW, C']
        phi = self.phi(x).flatten(2)  # [B, C', HW]
        g = self.g(x).flatten(2).transpose(1, 2)  # [B, HW, C']
        affinity = theta @ phi / (h * w)  # [B, HW, HW]
        y = (affinity @ g).transpose(1, 2).reshape(b, self.inner, h, w)
        return x + self.out(y)


class GeneralizedMeanPooling(nn.Module):
    """GeM: `(mean(x^p))^(1/p)` over the spatial positions; `[B, C, H, W] -> [B, C]`.

    p = 1 is average pooling, p -> inf max pooling; AGW's cross-modal baseline fixes p = 3.
    Inputs are clamped at `eps` so the root has a finite gradient at zero activations.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = float(p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, eps={self.eps}"


class AveragePooling(nn.Module):
    """Global average pooling, `[B, C, H, W] -> [B, C]` (the `--pooling avg` ablation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class BNNeck(nn.Module):
    """BatchNorm between the pooled feature and the identity classifier (Luo et al.'s BNNeck).

    The triplet and center losses see the pooled feature, the classifier the normalised one, and
    retrieval uses the normalised one. The BN shift is frozen at zero and the classifier has no bias,
    as in AGW, so the feature space stays centred for cosine retrieval. `bn`: `[B, D] -> [B, D]`;
    `classifier`: `[B, D] -> [B, C]` logits.
    """

    def __init__(self, feat_dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(feat_dim)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(feat_dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)


def pooled_feature(kind: str, p: float) -> nn.Module:
    """The pooling layer named by `ModelConfig.pooling` (already validated there)."""
    return GeneralizedMeanPooling(p) if kind == "gem" else AveragePooling()

