"""pix2pix UNet and PatchGAN: shapes, the skip path, output range, clear size errors."""

import pytest
import torch

from ppvi_cli.errors import PPVIError
from ppvi_cli.models.unet import PatchDiscriminator, UNetGenerator, init_weights


def test_unet_128_shapes_range_and_parameter_count_of_pix2pix():
    net = init_weights(UNetGenerator(num_downs=7, ngf=64)).eval()
    x = torch.rand(2, 3, 256, 128) * 2 - 1
    y = net(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    # pix2pix prints "Total number of parameters : 54.414 M" for its unet_256 (ngf 64, BatchNorm)
    unet_256 = UNetGenerator(num_downs=8, ngf=64)
    assert round(sum(p.numel() for p in unet_256.parameters()) / 1e6, 3) == 54.414


def test_unet_learns_identity_through_skips():
    torch.manual_seed(0)
    net = init_weights(UNetGenerator(num_downs=4, ngf=8, norm="instance"))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x = torch.rand(4, 3, 32, 16) * 1.6 - 0.8
    first = None
    for _ in range(150):
        loss = (net(x) - x).abs().mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.4 * first


def test_unet_refuses_sizes_it_cannot_halve():
    with pytest.raises(PPVIError, match="divisible by 32"):
        UNetGenerator(num_downs=5, ngf=4)(torch.zeros(1, 3, 48, 40))


def test_patchgan_70_gives_one_logit_per_patch():
    d = PatchDiscriminator(in_channels=6, ndf=8, n_layers=3)
    out = d(torch.zeros(2, 6, 256, 128))
    assert out.shape == (2, 1, 30, 14)  # the 70x70 receptive field tiles 256x128 into 30x14 patches
