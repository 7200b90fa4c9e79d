"""PPA's keypoint mask head: from an anonymized image, predict where the person's keypoints are.

KPR trains it against the pose expert's guidance maps; because the head only sees the anonymized
image, the generator must keep the body structure around the keypoints recognisable. PPA describes
it as light: a few 3x3 convolutions and a sigmoid, full resolution throughout. Plain 3x3 layers
would see only a 7x7 window, too little to tell a knee from a wall, so ppvi dilates them (1, 2, 4,
...): the same few layers then see a 15x15 window (three layers) at the same cost.
"""

from __future__ import annotations

import torch
from torch import nn


class MaskHead(nn.Module):
    """`[B, C, H, W]` image (any range) -> `[B, 1, H, W]` soft keypoint mask in [0, 1].

    `layers` 3x3 convolutions (`width` channels, ReLU between, dilation doubling from 1), the last
    to one channel + sigmoid.
    """

    def __init__(self, in_channels: int = 3, width: int = 32, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = []
        prev = in_channels
        for i in range(layers - 1):
            blocks += [nn.Conv2d(prev, width, 3, padding=2 ** i, dilation=2 ** i), nn.ReLU(inplace=True)]
            prev = width
        last = 2 ** (layers - 1)
        blocks += [nn.Conv2d(prev, 1, 3, padding=last, dilation=last), nn.Sigmoid()]
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
