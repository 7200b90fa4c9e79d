"""ReID backbones, each split into a shallow stem and a deeper trunk.

The split is what the dual-stream VI model needs: the stem (stride 4) is built once per modality,
the trunk is shared. A single-stream model has one stem. Adding a backbone is one `BACKBONES` entry.
Parameter names inside the stem and trunk keep torchvision's names (`conv1.weight`,
`layer2.0.conv1.weight`, `4.conv.0.0.weight`), so a torchvision state dict maps onto them by prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torchvision
from torch import nn

from ppvi_cli.models.agw import NonLocal
from ppvi_cli.registry import Registry


@dataclass(frozen=True)
class BackboneSpec:
    """What the model builder needs to know about one backbone.

    `build(last_stride, non_local)` returns a fresh, randomly initialised `(stem, trunk)` pair;
    `feat_dim` is the trunk's output channels; `imagenet_weights` names the torchvision weights
    enum (`torchvision.models.get_weight`) that `--pretrained imagenet` loads.
    """

    name: str
    feat_dim: int
    build: Callable[[int, bool], tuple[nn.Module, nn.Module]]
    imagenet_weights: str
    supports_non_local: bool


BACKBONES: Registry[BackboneSpec] = Registry("backbone")

# AGW puts non-local blocks after the last 2 blocks of layer2 and the last 3 of layer3 of ResNet-50.
_NON_LOCAL_PER_STAGE = {"layer2": 2, "layer3": 3}


def _add(spec: BackboneSpec) -> None:
    BACKBONES.register(spec.name)(spec)


def _set_stride(block: nn.Module, stride: int) -> None:
    """Turn every stride-2 convolution of one block (main path and shortcut) into `stride`."""
    for module in block.modules():
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            module.stride = (stride, stride)


def _block_channels(block: nn.Module) -> int:
    """Output channels of a torchvision ResNet block (Bottleneck ends in conv3, BasicBlock in conv2)."""
    last = block.conv3 if hasattr(block, "conv3") else block.conv2
    return last.out_channels


class ResNetStem(nn.Module):
    """conv1, bn1, relu, maxpool and layer1 of a ResNet: `[B, 3, H, W] -> [B, C1, H/4, W/4]`."""

    def __init__(self, net: torchvision.models.ResNet):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1 = net.layer1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))


class ResNetTrunk(nn.Module):
    """layer2..layer4 of a ResNet with optional non-local blocks after the last blocks of a stage.

    `[B, C1, H/4, W/4] -> [B, D, H/16, W/16]` with last stride 1 (H/32 with 2). A stage with fewer
    blocks than AGW's count (ResNet-18's 2-block layer3) gets one non-local block per block.
    """

    def __init__(self, net: torchvision.models.ResNet, non_local: bool):
        super().__init__()
        self.layer2, self.layer3, self.layer4 = net.layer2, net.layer3, net.layer4
        self.nl2 = self._non_local(self.layer2, "layer2", non_local)
        self.nl3 = self._non_local(self.layer3, "layer3", non_local)

    @staticmethod
    def _non_local(layer: nn.Sequential, name: str, enabled: bool) -> nn.ModuleList:
        count = min(_NON_LOCAL_PER_STAGE[name], len(layer)) if enabled else 0
        return nn.ModuleList(NonLocal(_block_channels(layer[-1])) for _ in range(count))

    @staticmethod
    def _stage(layer: nn.Sequential, blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        first = len(layer) - len(blocks)
        for i, block in enumerate(layer):
            x = block(x)
            if i >= first:
                x = blocks[i - first](x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._stage(self.layer2, self.nl2, x)
        x = self._stage(self.layer3, self.nl3, x)
        return self.layer4(x)


def _resnet(factory: Callable[..., torchvision.models.ResNet]):
    def build(last_stride: int, non_local: bool) -> tuple[nn.Module, nn.Module]:
        net = factory(weights=None)
        _set_stride(net.layer4[0], last_stride)
        return ResNetStem(net), ResNetTrunk(net, non_local)

    return build


def _mobilenet_v2(last_stride: int, non_local: bool) -> tuple[nn.Module, nn.Module]:
    """features[0:4] (stride 4, 24 channels) as the stem, features[4:] (to 1280 channels) as the trunk.

    Slicing an `nn.Sequential` keeps the original indices as names, so trunk keys stay `4.conv...`.
    """
    features = torchvision.models.mobilenet_v2(weights=None).features
    downsampling = [block for block in features if any(
        isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in block.modules())]
    _set_stride(downsampling[-1], last_stride)
    return features[:4], features[4:]


_add(BackboneSpec("resnet50", 2048, _resnet(torchvision.models.resnet50), "ResNet50_Weights.IMAGENET1K_V1", True))
_add(BackboneSpec("resnet18", 512, _resnet(torchvision.models.resnet18), "ResNet18_Weights.IMAGENET1K_V1", True))
_add(BackboneSpec("mobilenetv2", 1280, _mobilenet_v2, "MobileNet_V2_Weights.IMAGENET1K_V1", False))
