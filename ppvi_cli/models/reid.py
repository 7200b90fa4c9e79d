"""The ReID model: (per-modality) stem -> shared trunk -> pooling -> BNNeck, built from a ModelConfig."""

from __future__ import annotations

import torch
from torch import nn

from ppvi_cli.models.agw import BNNeck, pooled_feature
from ppvi_cli.models.config import ModelConfig
from ppvi_cli.models.dual_stream import ModalityStems


class ReIDModel(nn.Module):
    """AGW-style ReID model, single- or dual-stream.

    Input `x`: `[B, 3, H, W]` float, normalised with `config.mean`/`config.std`; `modality`: `[B]`
    long (0 visible, 1 infrared) or None (all visible; ignored by a single-stream model).
    `forward` in training mode returns `(global_feat [B, D], logits [B, C])` where `global_feat` is
    the pooled feature before the BNNeck (for the triplet and center losses); in eval mode it returns
    the BNNeck feature `[B, D]`, un-normalised (retrieval L2-normalises it).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        spec = config.spec
        # Each stream gets a freshly initialised stem so the two modalities start from different
        # random weights (pretrained loading then copies the same ImageNet stem into both).
        parts = [spec.build(config.last_stride, config.non_local) for _ in range(config.num_streams)]
        self.stems = ModalityStems([stem for stem, _ in parts])
        self.trunk = parts[0][1]
        self.pool = pooled_feature(config.pooling, config.gem_p)
        self.head = BNNeck(config.feat_dim, config.num_classes)

    def feature_map(self, x: torch.Tensor, modality: torch.Tensor | None = None) -> torch.Tensor:
        """The trunk's output `[B, D, H/16, W/16]` (last stride 1)."""
        return self.trunk(self.stems(x, modality))

    def features(self, x: torch.Tensor, modality: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`(global_feat [B, D], bnneck_feat [B, D])` in the module's current mode."""
        pooled = self.pool(self.feature_map(x, modality))
        return pooled, self.head.bn(pooled)

    def extract(self, x: torch.Tensor, modality: torch.Tensor | None = None) -> torch.Tensor:
        """The retrieval feature `[B, D]` (BNNeck output); call under `eval()` for batch-independent features."""
        return self.features(x, modality)[1]

    def forward(self, x: torch.Tensor, modality: torch.Tensor | None = None):
        pooled, neck = self.features(x, modality)
        return (pooled, self.head.classifier(neck)) if self.training else neck


def build_model(config: ModelConfig) -> ReIDModel:
    """A randomly initialised model for `config` (see `load_pretrained` for ImageNet weights)."""
    return ReIDModel(config)
