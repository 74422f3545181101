"""ResNet backbone with NanoDet's keys (nanodet/model/backbone/resnet.py, torchvision's names).

`pretrain` is checked and then ignored: the weights come from the checkpoint,
nothing is downloaded. Each block uses one activation module twice, as NanoDet's.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from heads.activations import activation_layer
from heads.component import Backbone, Keywords
from heads.schema import ACTIVATION, Schema, boolean, integer_choice, integers
from heads.weights import ASSUMED_ACTIVATION, StateDict, UnknownArchitecture, count, has_prefix

STAGE_PLANES = (64, 128, 256, 512)


def conv_bn(inp: int, oup: int, kernel: int, stride: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(oup)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 activation: str):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(inplanes, planes, 3, stride)
        self.act = activation_layer(activation)
        self.conv2, self.bn2 = conv_bn(planes, planes, 3)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.act(out + residual)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 activation: str):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(inplanes, planes, 1)
        self.conv2, self.bn2 = conv_bn(planes, planes, 3, stride)
        self.conv3, self.bn3 = conv_bn(planes, planes * self.expansion, 1)
        self.act = activation_layer(activation)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.act(out + residual)


DEPTHS: dict[int, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(Backbone):
    """Outputs the feature maps of `out_stages` (1-4 = layer1-layer4, strides 4 to 32)."""

    CONFIG_KEYS: ClassVar[Schema] = {
        "depth": integer_choice(tuple(DEPTHS), "a ResNet depth"),
        "out_stages": integers(1, 4, max_len=4),
        "activation": ACTIVATION,
        "pretrain": boolean,
    }
    WEIGHTS_HINT = "ResNet backbone keys (backbone.layer1)"
    WEIGHTS_PREFIX = "backbone.layer1."
    DROPPED_CONFIG_KEYS = ("pretrain",)  # the checkpoint holds the weights: nothing is downloaded

    def __init__(self, *, depth: int, out_stages: tuple[int, ...] = (1, 2, 3, 4),
                 activation: str = "ReLU"):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"unknown ResNet depth {depth!r} (known: {', '.join(map(str, DEPTHS))})")
        self.out_stages = tuple(out_stages)
        block, repeats = DEPTHS[depth]
        self.conv1, self.bn1 = conv_bn(3, 64, 7, 2)
        self.act = activation_layer(activation)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for index, (planes, blocks) in enumerate(zip(STAGE_PLANES, repeats), 1):
            stride = 1 if index == 1 else 2
            layer = []
            for number in range(blocks):
                downsample = None
                if number == 0 and (stride != 1 or inplanes != planes * block.expansion):
                    downsample = nn.Sequential(*conv_bn(inplanes, planes * block.expansion, 1,
                                                        stride))
                layer.append(block(inplanes, planes, stride if number == 0 else 1, downsample,
                                   activation))
                inplanes = planes * block.expansion
            setattr(self, f"layer{index}", nn.Sequential(*layer))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        return self.stage_outputs(x, ((i, getattr(self, f"layer{i}")) for i in range(1, 5)))

    @classmethod
    def keywords_from_weights(cls, sd: StateDict) -> Keywords | None:
        if not has_prefix(sd, "backbone.layer1."):
            return None
        repeats = tuple(count(sd, f"backbone.layer{i}") for i in range(1, 5))
        bottleneck = has_prefix(sd, "backbone.layer1.0.conv3.")
        for depth, (block, blocks) in DEPTHS.items():
            if blocks == repeats and (block is Bottleneck) == bottleneck:
                return {"depth": depth, "activation": ASSUMED_ACTIVATION}
        kind = "bottleneck" if bottleneck else "basic"
        raise UnknownArchitecture(
            f"backbone keys look like ResNet but its layers of {list(repeats)} {kind} blocks "
            f"match no depth (known: {', '.join(map(str, DEPTHS))})")

    @classmethod
    def stage_widths(cls, depth: int, **_: object) -> dict[int, int]:
        expansion = DEPTHS[depth][0].expansion
        return {index: planes * expansion for index, planes in enumerate(STAGE_PLANES, 1)}

    @classmethod
    def stage_strides(cls, **_: object) -> dict[int, int]:
        return {stage: 2 ** (stage + 1) for stage in range(1, 5)}

    @classmethod
    def describe(cls, depth: int, **_: object) -> str:
        return f"ResNet-{depth}"
