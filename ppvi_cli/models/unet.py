"""pix2pix image-to-image networks: the UNet generator and the PatchGAN discriminator.

Shared by the recovery attack (protected -> original), SecureReID's anonymization and recovery
generators and PPA's generator. Images are `[B, C, H, W]` in [-1, 1] (pixels * 2 - 1), which the
Tanh output covers, so a target in pixel space is always reachable (the authors' attack fed
ImageNet-normalised targets that Tanh cannot reach; ppvi does not).
"""

from __future__ import annotations

import torch
from torch import nn

from ppvi_cli.errors import PPVIError


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "none":
        return nn.Identity()
    raise PPVIError(f"unknown norm {kind!r} (choices: batch, instance, none)")


class UNetGenerator(nn.Module):
    """pix2pix UNet: `num_downs` stride-2 encoder steps with skip connections to the decoder.

    `unet_128` of the papers is `num_downs=7`; an input side must be divisible by 2**num_downs
    (256x128 allows 7, 64x32 allows 5). Channels grow ngf, 2ngf, 4ngf, then stay at 8ngf;
    the 8ngf decoder steps outside the innermost use dropout 0.5 when `dropout` is on (as pix2pix).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, num_downs: int = 7, ngf: int = 64,
                 norm: str = "batch", dropout: bool = False):
        super().__init__()
        if num_downs < 2:
            raise PPVIError(f"UNet needs num_downs >= 2, got {num_downs}")
        self.num_downs = num_downs
        widths = [min(ngf * 2 ** i, ngf * 8) for i in range(num_downs)]
        self.down = nn.ModuleList()
        prev = in_channels
        for i, width in enumerate(widths):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2, inplace=True)]
            layers.append(nn.Conv2d(prev, width, 4, 2, 1, bias=norm != "batch"))  # as pix2pix, even unnormed ends
            if 0 < i < num_downs - 1:  # no norm on the outermost input nor the 1x1 bottleneck
                layers.append(_norm(norm, width))
            self.down.append(nn.Sequential(*layers))
            prev = width
        self.up = nn.ModuleList()
        for i in reversed(range(num_downs)):
            in_ch = widths[i] if i == num_downs - 1 else widths[i] * 2
            if i == 0:
                self.up.append(nn.Sequential(nn.ReLU(inplace=True),
                                             nn.ConvTranspose2d(in_ch, out_channels, 4, 2, 1), nn.Tanh()))
                continue
            out = widths[i - 1]
            layers = [nn.ReLU(inplace=True), nn.ConvTranspose2d(in_ch, out, 4, 2, 1, bias=norm != "batch"),
                      _norm(norm, out)]
            if dropout and 4 <= i < num_downs - 1:  # pix2pix: the 8ngf blocks outside the innermost
                layers.append(nn.Dropout(0.5))
            self.up.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = 2 ** self.num_downs
        if x.shape[-2] % step or x.shape[-1] % step:
            raise PPVIError(f"UNet with num_downs={self.num_downs} needs height and width divisible by {step}, "
                            f"got {tuple(x.shape[-2:])}")
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        x = self.up[0](skips[-1])
        for layer, skip in zip(self.up[1:], reversed(skips[:-1])):
            x = layer(torch.cat([x, skip], dim=1))
        return x


class PatchDiscriminator(nn.Module):
    """pix2pix PatchGAN: one real/fake logit per overlapping patch (70x70 with `n_layers=3`).

    A conditional discriminator gets the condition and the image concatenated on channels
    (`in_channels = 6` for RGB pairs). Output `[B, 1, h, w]` logits (use BCE-with-logits).
    """

    def __init__(self, in_channels: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        width = ndf
        for i in range(1, n_layers + 1):
            nxt = ndf * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(width, nxt, 4, stride, 1, bias=norm != "batch"), _norm(norm, nxt),
                       nn.LeakyReLU(0.2, inplace=True)]
            width = nxt
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """pix2pix's N(0, 0.02) initialisation of convolutions and norm scales."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return module
