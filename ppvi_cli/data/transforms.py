"""Images to model tensors: resize, scale to [0, 1], normalise; ReID training augmentation.

Grey (infrared) images are repeated to 3 channels, as the VI papers feed them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 `[H, W]` or `[H, W, 3]` -> float `[3, H, W]` in [0, 1]."""
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().div_(255.0)


def resize(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of `[B, 3, H, W]` or `[3, H, W]` to `size` = (H, W) (no-op when equal)."""
    single = images.dim() == 3
    batch = images[None] if single else images
    if tuple(batch.shape[-2:]) != tuple(size):
        batch = F.interpolate(batch, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return batch[0] if single else batch


def normalize(images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    return (images - m) / s


def denormalize(images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    return images * s + m


def augment(image: torch.Tensor, generator: torch.Generator, pad: int = 10, erase_p: float = 0.5) -> torch.Tensor:
    """AGW's training augmentation on one `[3, H, W]` image in [0, 1]: flip, pad-and-crop, erasing."""
    _, h, w = image.shape
    if torch.rand((), generator=generator) < 0.5:
        image = image.flip(-1)
    if pad:
        padded = F.pad(image, (pad, pad, pad, pad))
        top = int(torch.randint(0, 2 * pad + 1, (), generator=generator))
        left = int(torch.randint(0, 2 * pad + 1, (), generator=generator))
        image = padded[:, top:top + h, left:left + w]
    if torch.rand((), generator=generator) < erase_p:
        area = h * w * float(torch.empty(()).uniform_(0.02, 0.4, generator=generator))
        ratio = float(torch.empty(()).uniform_(0.3, 3.3, generator=generator))
        eh, ew = int(round((area * ratio) ** 0.5)), int(round((area / ratio) ** 0.5))
        if 0 < eh < h and 0 < ew < w:
            top = int(torch.randint(0, h - eh + 1, (), generator=generator))
            left = int(torch.randint(0, w - ew + 1, (), generator=generator))
            image = image.clone()
            image[:, top:top + eh, left:left + ew] = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)  # as AGW: erase to the mean
    return image
