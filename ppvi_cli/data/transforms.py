"""Pixel transforms every floor shares: images to model tensors and back, the conventional protections.

Images move through three ranges: uint8 files, `[0, 1]` floats (what a ReID model normalises with
its own mean/std) and `[-1, 1]` (what the pix2pix generators and recovery attackers read and write).
A float image becomes bytes by one rule (`to_uint8`: clip, round half to even). Grey (infrared) images
are repeated to 3 channels, as the VI papers feed them. The conventional desensitisations (mosaic,
blur, noise as SecureReID defines them) live here because both the `anonymize` methods and the
generator recipes' supervision use them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from ppvi_cli.validate import check_number

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 `[H, W]` or `[H, W, 3]` -> float `[3, H, W]` in [0, 1]."""
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().div_(255.0)


def to_uint8(images01: torch.Tensor) -> torch.Tensor:
    """Float pixels in [0, 1] (any layout) -> uint8, clipped and rounded half to even (as `torch.round` and
    `np.round`): how ppvi stores a float image."""
    return images01.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def to_hwc(images: torch.Tensor) -> np.ndarray:
    """`[B, C, H, W]` -> host numpy `[B, H, W, C]` (what image files and the metrics take)."""
    return images.permute(0, 2, 3, 1).cpu().numpy()


def to_signed(images01: torch.Tensor) -> torch.Tensor:
    """`[0, 1]` -> the generators' `[-1, 1]`."""
    return images01 * 2.0 - 1.0


def from_signed(images: torch.Tensor) -> torch.Tensor:
    """The generators' `[-1, 1]` -> `[0, 1]`, clamped."""
    return ((images + 1.0) / 2.0).clamp(0.0, 1.0)


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


def mosaic(pixels: np.ndarray, block: int = 24) -> np.ndarray:
    """Fill every `block` x `block` tile with its top-left pixel (SecureReID's mosaic)."""
    check_number("--block", block, low=1, integer=True)
    rows = (np.arange(pixels.shape[0]) // block) * block
    cols = (np.arange(pixels.shape[1]) // block) * block
    return pixels.take(rows, axis=0).take(cols, axis=1)  # take: half the time of fancy indexing


def gaussian_blur(pixels: np.ndarray, radius: float = 12.0) -> np.ndarray:
    """PIL's GaussianBlur(radius) (SecureReID's blur); radius is the Gaussian's standard deviation."""
    check_number("--radius", radius, low=0)
    return np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius)))


def gaussian_noise(pixels: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """x/255 + N(0, sigma), clipped to [0, 1], rounded back to uint8 (SecureReID's noise)."""
    check_number("--sigma", sigma, low=0)
    noisy = pixels.astype(np.float64) / 255.0 + rng.normal(0.0, sigma, size=pixels.shape)
    return np.round(np.clip(noisy, 0.0, 1.0) * 255.0).astype(np.uint8)
