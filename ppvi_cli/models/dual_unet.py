"""PPA's dual-stream UNet anonymization generator for visible-infrared data.

Visible and infrared images differ most in low-level statistics (colour and texture vs. heat
contours), so, as the dual-stream ReID models do, each modality gets its own outer encoder and
decoder steps (`private` of them on each side: the pixel-level layers) while the inner UNet body,
where the anonymization style is decided, is shared. PPA's paper does not say how deep its streams
split, so ppvi keeps the split a parameter, `private` in 1..num_downs-1 (default 1: the first
convolution and the last transposed convolution per modality; num_downs-1 leaves only the innermost
step shared).
"""

from __future__ import annotations

import torch
from torch import nn

from ppvi_cli.errors import PPVIError
from ppvi_cli.models.dual_stream import modality_groups
from ppvi_cli.models.unet import UNetGenerator


class DualUNetGenerator(nn.Module):
    """`forward(x [B, 3, H, W] in [-1, 1], modality [B] long (0 visible, 1 infrared; best on the CPU,
    see `modality_groups`) | None) -> [B, 3, H, W]`.

    Built from pix2pix UNets (`ppvi_cli.models.unet`): stream `m` owns `down[:private]` and
    `up[-private:]` of its own UNet, and the body (`down[private:]`, `up[:-private]`) is stream 0's,
    shared. Each sample goes through its own modality's outer layers, so the private BatchNorms see
    only their modality. `modality=None` routes every sample through the visible stream.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, num_downs: int = 7, ngf: int = 64,
                 norm: str = "batch", dropout: bool = False, private: int = 1, streams: int = 2):
        super().__init__()
        if not 1 <= private < num_downs:
            raise PPVIError(f"dual UNet private depth must be in 1..{num_downs - 1}, got {private}")
        nets = [UNetGenerator(in_channels, out_channels, num_downs, ngf, norm, dropout) for _ in range(streams)]
        self.num_downs, self.private, self.streams = num_downs, private, streams
        self.private_down = nn.ModuleList(nn.ModuleList(net.down[:private]) for net in nets)
        self.private_up = nn.ModuleList(nn.ModuleList(net.up[num_downs - private:]) for net in nets)
        self.shared_down = nn.ModuleList(nets[0].down[private:])
        self.shared_up = nn.ModuleList(nets[0].up[:num_downs - private])

    @staticmethod
    def _put(full: torch.Tensor | None, part: torch.Tensor, index: torch.Tensor | None, batch: int) -> torch.Tensor:
        if index is None:
            return part
        if full is None:
            full = part.new_zeros((batch, *part.shape[1:]))
        return full.index_copy(0, index, part)

    def forward(self, x: torch.Tensor, modality: torch.Tensor | None = None) -> torch.Tensor:
        step = 2 ** self.num_downs
        if x.shape[-2] % step or x.shape[-1] % step:
            raise PPVIError(f"dual UNet with num_downs={self.num_downs} needs height and width divisible by "
                            f"{step}, got {tuple(x.shape[-2:])}")
        batch, n = x.shape[0], self.num_downs
        groups = modality_groups(modality, batch, self.streams, x.device)
        skips: list[torch.Tensor | None] = [None] * self.private
        for stream, index in groups:
            h = x if index is None else x.index_select(0, index)
            for level, layer in enumerate(self.private_down[stream]):
                h = layer(h)
                skips[level] = self._put(skips[level], h.clone(), index, batch)
        h = skips[-1]
        for layer in self.shared_down:
            h = layer(h)
            skips.append(h)
        y = self.shared_up[0](skips[-1])
        for j, layer in enumerate(self.shared_up[1:], start=1):
            y = layer(torch.cat([y, skips[n - 1 - j]], dim=1))
        out = None
        for stream, index in groups:
            z = y if index is None else y.index_select(0, index)
            for j, layer in enumerate(self.private_up[stream], start=n - self.private):
                skip = skips[n - 1 - j]
                z = layer(torch.cat([z, skip if index is None else skip.index_select(0, index)], dim=1))
            out = self._put(out, z, index, batch)
        return out
