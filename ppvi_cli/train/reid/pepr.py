"""PEPR-Net's training losses (Kansal et al., WACV 2024, Sec. 4.2-4.3): a ReID encoder whose features
are pushed away from identity by a De-ID decoder and an adversarial identity (Adv-ID) module.

What a trainer does (`images` are the tensors it feeds the model, `labels` contiguous training ids):

    pepr = PEPRLoss(model.config.feat_dim, num_classes).to(device)
    optimizer = torch.optim.Adam([*model.parameters(), *pepr.parameters()], lr=3e-4)  # decoder, adversary too
    model.train()
    global_feat, _ = model(images, modality)           # [B, D], the pooled feature the triplet loss uses
    total, parts = pepr(global_feat, images, labels)   # parts: triplet, deid, adv_id, adversary
    optimizer.zero_grad(); total.backward(); optimizer.step()

How ppvi reads the paper, and what it decides where the paper is silent or slips:
- Decoder input is the encoder's feature vector (Eq. 2: M_dec(M_enc(x))), "reshaped, upsampled" into
  3 convolutions, 3 upsamplings and 2 ReLUs (Fig. 3). ppvi reshapes [B, D] to [B, D/8, 4, 2] (the
  2:1 person box) and upsamples (nearest) to 1/16, 1/4 and the full image size; 64 and 32 channels.
- The De-ID target is the pixelated input (their ref. [15]): block means, computed in the space of
  `images` (block means commute with per-channel normalisation). The paper gives no block size:
  ppvi uses the toolkit's mosaic block, 24 px at 256x128.
- Eq. 2 is a sum of squared errors; ppvi takes the mean over pixels and images so that lambda_2 = 0.1
  weighs it against a triplet term of order 1 (a sum over a 128-image 256x128 batch is ~10^7 larger).
- Eq. 3 as printed, (1/NK) sum log p_k, is unbounded below and not least at a uniform posterior; the
  text (uniform "ground truth", after Liu et al., CVPR 2018) means the cross-entropy to the uniform
  distribution over the K ids of the mini-batch. ppvi returns it minus log K, i.e. KL(uniform || p):
  zero exactly at a uniform posterior, same gradient.
- The identity classifier is trained adversarially, as in Liu et al.: it learns to name the ids
  (cross-entropy on true labels, features detached) while the encoder learns to make its posterior
  uniform (classifier weights detached in that term). Trained on the uniform target alone, as Eq. 4
  read literally would, the softmax layer just learns a constant output and the encoder feels nothing.
- The "softmax layer" is a cosine classifier (unit features, unit weight rows, logits times a fixed
  scale 16, no bias). A plain linear layer on unit features cannot grow confident logits at the
  encoder's learning rate: on the Market subset its cross-entropy stayed at ln 300 = 5.70 -> 5.61 over
  40 epochs, so the adversarial push on the encoder was ~0 (b8590e0, leakage unchanged).
- Triplet (Eq. 1): squared Euclidean distances, hinge with margin beta, batch-hard mining (the paper's
  32 ids x 4 images batch is the batch-hard setting); beta = 0.3, which the paper does not give.
- The triplet and the Adv-ID classifier see the L2-normalised features (what retrieval and the leakage
  measure score); the decoder sees them unnormalised. On raw MobileNetV2 features (norms in the tens) a
  0.3 margin on squared distances stalled (triplet ~2.0 after 40 Market epochs, rank-1 11.8); on unit
  features the same run reached rank-1 62.8 (benchmarks/market_real.py setting).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ppvi_cli.errors import PPVIError

LAMBDAS = (1.0, 0.1, 0.001)  # triplet, De-ID, Adv-ID (Eq. 4)
MARGIN = 0.3
DEID_BLOCK = 24  # px; the toolkit's mosaic block at 256x128
DECODER_GRID = (4, 2)
DECODER_CHANNELS = (64, 32)
ADV_SCALE = 16.0  # logit scale of the cosine identity classifier


def check_lambdas(lambdas, name: str = "PEPR lambdas") -> None:
    """PPVIError unless `lambdas` are three weights >= 0 (triplet, De-ID, Adv-ID); `name` labels the error."""
    if len(lambdas) != 3 or any(not (w >= 0) for w in lambdas):
        raise PPVIError(f"{name} must be three weights >= 0 (triplet, De-ID, Adv-ID), got {tuple(lambdas)!r}")


def pixelate(images: torch.Tensor, block: int = DEID_BLOCK) -> torch.Tensor:
    """Each `block` x `block` tile replaced by its mean (edge tiles by the mean of their pixels).

    `images` [B, C, H, W] float -> same shape, no gradient (a target, not a layer).
    """
    if block < 1:
        raise PPVIError(f"pixelation block must be >= 1 px, got {block}")
    height, width = images.shape[-2:]
    with torch.no_grad():
        means = F.avg_pool2d(images, block, stride=block, ceil_mode=True)
        tiles = means.repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)
    return tiles[..., :height, :width].contiguous()


class DeIDDecoder(nn.Module):
    """Feature vector -> image: reshape to a 4x2 grid, then (upsample, 3x3 conv) x 3, ReLU between.

    `forward(features [B, D], size (H, W)) -> [B, out_channels, H, W]`, unbounded (it regresses
    images in the space the target is in). D must be divisible by 8 (grid cells).
    """

    def __init__(self, feature_dim: int, channels: tuple[int, int] = DECODER_CHANNELS, out_channels: int = 3,
                 grid: tuple[int, int] = DECODER_GRID):
        super().__init__()
        cells = grid[0] * grid[1]
        if feature_dim % cells:
            raise PPVIError(f"the De-ID decoder reshapes the {feature_dim}-d feature into a {grid[0]}x{grid[1]} grid; "
                            f"the feature width must be a multiple of {cells}")
        self.grid = grid
        widths = (feature_dim // cells, *channels, out_channels)
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, 3, padding=1) for c_in, c_out in zip(widths, widths[1:]))

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        height, width = int(size[0]), int(size[1])
        x = features.reshape(features.shape[0], -1, *self.grid)
        stages = ((math.ceil(height / 16), math.ceil(width / 16)), (math.ceil(height / 4), math.ceil(width / 4)),
                  (height, width))
        for i, (conv, stage) in enumerate(zip(self.convs, stages)):
            x = conv(F.interpolate(x, size=stage, mode="nearest"))
            if i < len(self.convs) - 1:
                x = F.relu(x)
        return x


def uniform_divergence(logits: torch.Tensor) -> torch.Tensor:
    """Batch mean of KL(uniform || softmax(logits)) = CE(uniform, p) - log K; 0 iff p is uniform.

    `logits` [B, K] -> scalar. Its gradient on the logits is (p - 1/K) / B: nothing to gain at uniform.
    """
    log_p = F.log_softmax(logits, dim=1)
    return (-log_p.mean(dim=1)).mean() - math.log(logits.shape[1])


class AdvIDLoss(nn.Module):
    """The Adv-ID module: a cosine softmax identity classifier on the features, trained against the encoder.

    `forward(features [B, D], labels [B] long in [0, num_classes)) -> (adv_id, adversary)`:
    `adv_id` = KL(uniform || posterior) over the batch's ids with the classifier frozen (its gradient
    reaches only the features); `adversary` = cross-entropy of the classifier on the true labels with
    the features detached (its gradient reaches only the classifier). Both are meant to be minimised.
    Logits are `scale * cos(feature, weight row)`.
    """

    def __init__(self, feature_dim: int, num_classes: int, scale: float = ADV_SCALE):
        super().__init__()
        if not scale > 0:
            raise PPVIError(f"Adv-ID logit scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, feature_dim))
        nn.init.normal_(self.weight, std=feature_dim ** -0.5)

    def logits(self, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(features, dim=1) @ F.normalize(weight, dim=1).t()

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        classes = self.weight.shape[0]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise PPVIError(f"Adv-ID labels must be training-id indices in [0, {classes}), "
                            f"got {int(labels.min())}..{int(labels.max())}; map pids with label_map first")
        present = torch.unique(labels)
        adv_id = uniform_divergence(self.logits(features, self.weight.detach())[:, present])
        adversary = F.cross_entropy(self.logits(features.detach(), self.weight), labels)
        return adv_id, adversary


def squared_distances(features: torch.Tensor) -> torch.Tensor:
    """`[N, D] -> [N, N]` squared Euclidean distances, clamped at 0 against rounding."""
    squared = features.pow(2).sum(dim=1)
    return (squared[:, None] + squared[None, :] - 2.0 * features @ features.t()).clamp(min=0.0)


class BatchHardTriplet(nn.Module):
    """Eq. 1 with batch-hard mining: mean over anchors of [max d2(a, p) - min d2(a, n) + margin]_+.

    `forward(features [B, D], labels [B]) -> scalar`. Anchors without a positive or a negative in the
    batch are left out (a PK batch has neither kind).
    """

    def __init__(self, margin: float = MARGIN):
        super().__init__()
        self.margin = margin

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        dist = squared_distances(features)
        same = labels[:, None] == labels[None, :]
        others = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        positive, negative = same & others, ~same
        valid = positive.any(dim=1) & negative.any(dim=1)
        hardest_pos = dist.masked_fill(~positive, float("-inf")).max(dim=1).values
        hardest_neg = dist.masked_fill(~negative, float("inf")).min(dim=1).values
        hinge = F.relu(hardest_pos - hardest_neg + self.margin)
        return hinge[valid].mean() if bool(valid.any()) else features.sum() * 0.0


class PEPRLoss(nn.Module):
    """Eq. 4: lambda_1 triplet + lambda_2 De-ID + lambda_3 Adv-ID, plus the adversary's own loss.

    `forward(features [B, D], images [B, 3, H, W], labels [B] long) -> (total, parts)`: `features`
    the encoder's training feature (with gradient), `images` what the encoder saw (the target is their
    pixelation), `labels` training-id indices. `parts` = {"triplet", "deid", "adv_id", "adversary"},
    detached and unweighted. The adversary term trains only the classifier, so its weight is 1.
    Its parameters (decoder, classifier) must be in the optimizer with the encoder's.
    """

    def __init__(self, feature_dim: int, num_classes: int, lambdas: tuple[float, float, float] = LAMBDAS,
                 margin: float = MARGIN, block: int = DEID_BLOCK,
                 decoder_channels: tuple[int, int] = DECODER_CHANNELS):
        super().__init__()
        check_lambdas(lambdas)
        if block < 1:
            raise PPVIError(f"pixelation block must be >= 1 px, got {block}")
        self.lambdas = tuple(float(w) for w in lambdas)
        self.block = block
        self.triplet = BatchHardTriplet(margin)
        self.decoder = DeIDDecoder(feature_dim, decoder_channels)
        self.adv_id = AdvIDLoss(feature_dim, num_classes)

    def forward(self, features: torch.Tensor, images: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if images.ndim != 4 or len(images) != len(features):
            raise PPVIError(f"PEPR needs images [B, C, H, W] matching the {len(features)} features, got "
                            f"{tuple(images.shape)}")
        target = pixelate(images, self.block)
        reconstruction = self.decoder(features, images.shape[-2:])
        adv_id, adversary = self.adv_id(features, labels)  # cosine logits: it normalises itself
        parts = {"triplet": self.triplet(F.normalize(features, dim=1), labels),
                 "deid": F.mse_loss(reconstruction, target), "adv_id": adv_id, "adversary": adversary}
        l_reid, l_deid, l_adv = self.lambdas
        total = l_reid * parts["triplet"] + l_deid * parts["deid"] + l_adv * parts["adv_id"] + parts["adversary"]
        return total, {k: v.detach() for k, v in parts.items()}
