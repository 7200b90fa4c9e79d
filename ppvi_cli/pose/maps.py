"""Keypoint guidance maps for PPA's keypoint preservation regularisation (KPR).

A guidance map marks the pixels within `radius` of a present keypoint: PPA's
`C(u, v) = 1 if min_j sqrt((u - u_j)^2 + (v - v_j)^2) <= R else 0`, R = 5 at 256x128. Keypoints are
COCO `(x, y, v)` rows in the pixels of the map (x = column, y = row, pixel (u, v) centred on the
integer coordinate); a keypoint is present when `v > 0` (COCO: 1 labelled but hidden, 2 seen).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

RADIUS = 5.0  # PPA's R, in pixels of the 256x128 training input


def guidance_maps(keypoints: torch.Tensor | np.ndarray, size: Sequence[int], radius: float = RADIUS) -> torch.Tensor:
    """Binary maps `[B, 1, H, W]` float32 (on the keypoints' device): 1 within `radius` of a keypoint.

    Args:
        keypoints: `[B, K, 3]` rows `(x, y, v)` in pixels of an `H x W` image; rows with `v <= 0`
            are ignored, so an image with no detection gives an all-zero map.
        size: `(H, W)` of the maps.
        radius: R in pixels (inclusive: a pixel at distance exactly R is 1).
    """
    kps = torch.as_tensor(keypoints, dtype=torch.float32)
    if kps.dim() != 3 or kps.shape[-1] != 3:
        raise ValueError(f"keypoints must be [B, K, 3] (x, y, v), got shape {tuple(kps.shape)}")
    height, width = (int(s) for s in size)
    rows = torch.arange(height, dtype=torch.float32, device=kps.device).view(1, 1, height, 1)
    cols = torch.arange(width, dtype=torch.float32, device=kps.device).view(1, 1, 1, width)
    x, y = kps[..., 0, None, None], kps[..., 1, None, None]  # [B, K, 1, 1]
    near = (cols - x) ** 2 + (rows - y) ** 2 <= float(radius) ** 2  # [B, K, H, W]
    near &= (kps[..., 2] > 0)[..., None, None]
    return near.any(dim=1, keepdim=True).float()


def scale_keypoints(keypoints: np.ndarray, from_size: Sequence[int], to_size: Sequence[int]) -> np.ndarray:
    """Keypoints `[..., K, 3]` of an image of `from_size` (H, W) moved to a resized copy of `to_size`.

    Coordinates scale with the image (pixel edges map to pixel edges); `v` is kept.
    """
    out = np.array(keypoints, dtype=np.float32, copy=True)
    (h0, w0), (h1, w1) = from_size, to_size
    out[..., 0] = (out[..., 0] + 0.5) * (w1 / w0) - 0.5
    out[..., 1] = (out[..., 1] + 0.5) * (h1 / h0) - 0.5
    return out


def flip_keypoints(keypoints: np.ndarray, width: int) -> np.ndarray:
    """Keypoints of a horizontally flipped image (`x -> W - 1 - x`); the map needs no left/right swap."""
    out = np.array(keypoints, dtype=np.float32, copy=True)
    out[..., 0] = width - 1 - out[..., 0]
    return out


def detected(keypoints: np.ndarray) -> np.ndarray:
    """`[N]` bool: the expert found a person (at least one present keypoint) in each image."""
    return (np.asarray(keypoints)[..., 2] > 0).any(axis=-1)
