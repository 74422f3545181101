"""RepVGG backbone with NanoDet's keys (nanodet/model/backbone/repvgg.py, module/conv.py).

A block is trained as three parallel branches (3x3 conv+BN, 1x1 conv+BN, and a
BN identity where shapes allow) summed before the activation; `deploy_form`
folds them into one 3x3 conv with bias per block, the form to export. NanoDet
checkpoints may hold either form (config `deploy`); both are read from weights.
"""

from __future__ import annotations

import copy
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from heads.activations import activation_layer
from heads.component import Backbone, Keywords
from heads.schema import ACTIVATION, CHANNELS, Schema, boolean, choice, integers, optional
from heads.weights import StateDict, UnknownArchitecture, count, has_prefix, shape

ASSUMED_ACTIVATION = "ReLU"  # NanoDet's default and that of the official RepVGG config
GROUPWISE_LAYERS = tuple(range(2, 27, 2))  # the layers the "g2"/"g4" variants make grouped


class ArchSetting(NamedTuple):
    num_blocks: tuple[int, int, int, int]
    width_multiplier: tuple[float, float, float, float]
    groups: int = 1  # of the GROUPWISE_LAYERS


A_BLOCKS = (2, 4, 14, 1)
B_BLOCKS = (4, 6, 16, 1)
ARCHS = {
    "A0": ArchSetting(A_BLOCKS, (0.75, 0.75, 0.75, 2.5)),
    "A1": ArchSetting(A_BLOCKS, (1, 1, 1, 2.5)),
    "A2": ArchSetting(A_BLOCKS, (1.5, 1.5, 1.5, 2.75)),
    "B0": ArchSetting(B_BLOCKS, (1, 1, 1, 2.5)),
    "B1": ArchSetting(B_BLOCKS, (2, 2, 2, 4)),
    "B1g2": ArchSetting(B_BLOCKS, (2, 2, 2, 4), 2),
    "B1g4": ArchSetting(B_BLOCKS, (2, 2, 2, 4), 4),
    "B2": ArchSetting(B_BLOCKS, (2.5, 2.5, 2.5, 5)),
    "B2g2": ArchSetting(B_BLOCKS, (2.5, 2.5, 2.5, 5), 2),
    "B2g4": ArchSetting(B_BLOCKS, (2.5, 2.5, 2.5, 5), 4),
    "B3": ArchSetting(B_BLOCKS, (3, 3, 3, 5)),
    "B3g2": ArchSetting(B_BLOCKS, (3, 3, 3, 5), 2),
    "B3g4": ArchSetting(B_BLOCKS, (3, 3, 3, 5), 4),
}


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int,
            groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups,
                  bias=False),
        nn.BatchNorm2d(out_channels),
    )


def fold_batch_norm(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias of conv(kernel) followed by `bn` in eval mode, in float64."""
    scale = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
    bias = bn.bias.double() - bn.running_mean.double() * scale
    return kernel.double() * scale.reshape(-1, 1, 1, 1), bias


class RepVGGConvModule(nn.Module):
    """One RepVGG block: a 3x3 conv with padding 1, as three branches or one fused conv."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 1,
                 activation: str = "ReLU", deploy: bool = False):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.groups = stride, groups
        self.act = activation_layer(activation)
        if deploy:
            self.rbr_reparam = self.fused_conv()
        else:
            self.rbr_identity = (nn.BatchNorm2d(in_channels)
                                 if in_channels == out_channels and stride == 1 else None)
            self.rbr_dense = conv_bn(in_channels, out_channels, 3, stride, groups)
            self.rbr_1x1 = conv_bn(in_channels, out_channels, 1, stride, groups)

    def fused_conv(self) -> nn.Conv2d:
        return nn.Conv2d(self.in_channels, self.out_channels, 3, self.stride, 1,
                         groups=self.groups, bias=True)

    @property
    def is_deploy(self) -> bool:
        return hasattr(self, "rbr_reparam")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_deploy:
            return self.act(self.rbr_reparam(x))
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return self.act(out)

    def identity_kernel(self) -> torch.Tensor:
        """The 3x3 (grouped) kernel of the identity map."""
        per_group = self.in_channels // self.groups
        kernel = torch.zeros(self.in_channels, per_group, 3, 3, dtype=torch.float64)
        for channel in range(self.in_channels):
            kernel[channel, channel % per_group, 1, 1] = 1.0
        return kernel

    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel and bias equal to the sum of the branches (float64)."""
        kernel, bias = fold_batch_norm(self.rbr_dense[0].weight, self.rbr_dense[1])
        kernel_1x1, bias_1x1 = fold_batch_norm(self.rbr_1x1[0].weight, self.rbr_1x1[1])
        kernel, bias = kernel + F.pad(kernel_1x1, [1, 1, 1, 1]), bias + bias_1x1
        if self.rbr_identity is not None:
            kernel_id, bias_id = fold_batch_norm(self.identity_kernel(), self.rbr_identity)
            kernel, bias = kernel + kernel_id, bias + bias_id
        return kernel, bias

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Replace the branches by one 3x3 conv with bias (`rbr_reparam`)."""
        if self.is_deploy:
            return
        kernel, bias = self.fused_kernel_bias()
        dtype = self.rbr_dense[0].weight.dtype
        fused = self.fused_conv().to(self.rbr_dense[0].weight.device)
        fused.weight.copy_(kernel.to(dtype))
        fused.bias.copy_(bias.to(dtype))
        del self.rbr_dense, self.rbr_1x1, self.rbr_identity
        self.rbr_reparam = fused


def deploy_form(model: nn.Module) -> nn.Module:
    """A copy of `model` with every RepVGG block fused into one 3x3 conv (for export)."""
    fused = copy.deepcopy(model)
    for module in fused.modules():
        if isinstance(module, RepVGGConvModule):
            module.switch_to_deploy()
        elif isinstance(module, RepVGG):
            module.deploy = True
    return fused


def stage_channels(arch: str, last_channel: int | None) -> tuple[int, ...]:
    """Output channels of stages 0 (the stem) to 4."""
    w = ARCHS[arch].width_multiplier
    return (min(64, int(64 * w[0])), int(64 * w[0]), int(128 * w[1]), int(256 * w[2]),
            last_channel or int(512 * w[3]))


def layer_groups(arch: str) -> tuple[int, ...]:
    """Groups of each block after the stem (layers numbered from 1)."""
    setting = ARCHS[arch]
    layers = range(1, sum(setting.num_blocks) + 1)
    return tuple(setting.groups if layer in GROUPWISE_LAYERS else 1 for layer in layers)


class RepVGG(Backbone):
    """Outputs the feature maps of `out_stages` (1-4 = strides 4, 8, 16, 32)."""

    CONFIG_KEYS: ClassVar[Schema] = {
        "arch": choice(tuple(ARCHS), "a RepVGG arch"),
        "out_stages": integers(1, 4, max_len=4),
        "activation": ACTIVATION,
        "deploy": boolean,
        "last_channel": optional(CHANNELS),
    }
    WEIGHTS_HINT = "RepVGG backbone keys (backbone.stage0.rbr_*)"
    WEIGHTS_PREFIX = "backbone.stage0.rbr_"

    def __init__(self, *, arch: str, out_stages: tuple[int, ...] = (1, 2, 3, 4),
                 activation: str = "ReLU", deploy: bool = False, last_channel: int | None = None):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown RepVGG arch {arch!r} (known: {', '.join(ARCHS)})")
        self.out_stages = tuple(out_stages)
        self.deploy = deploy
        channels = stage_channels(arch, last_channel)
        groups = iter(layer_groups(arch))
        self.stage0 = RepVGGConvModule(3, channels[0], 2, activation=activation, deploy=deploy)
        inp = channels[0]
        for index, (blocks, oup) in enumerate(zip(ARCHS[arch].num_blocks, channels[1:]), 1):
            stage = [RepVGGConvModule(inp if i == 0 else oup, oup, 2 if i == 0 else 1,
                                      next(groups), activation, deploy) for i in range(blocks)]
            setattr(self, f"stage{index}", nn.Sequential(*stage))
            inp = oup

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stage0(x)
        return self.stage_outputs(x, ((i, getattr(self, f"stage{i}")) for i in range(1, 5)))

    @classmethod
    def keywords_from_weights(cls, sd: StateDict) -> Keywords | None:
        if not has_prefix(sd, "backbone.stage0.rbr_"):
            return None
        deploy = has_prefix(sd, "backbone.stage0.rbr_reparam.")
        conv = "rbr_reparam.weight" if deploy else "rbr_dense.0.weight"
        num_blocks = tuple(count(sd, f"backbone.stage{i}") for i in range(1, 5))
        channels = [shape(sd, f"backbone.stage0.{conv}")[0]]
        groups = []
        for index, blocks in enumerate(num_blocks, 1):
            for block in range(blocks):
                weight = shape(sd, f"backbone.stage{index}.{block}.{conv}")
                groups.append(channels[-1] // weight[1] if channels[-1] % weight[1] == 0 else 0)
                channels.append(weight[0])
        stage_ends = [sum(num_blocks[:i]) for i in range(5)]
        seen = tuple(channels[end] for end in stage_ends)
        for arch, setting in ARCHS.items():
            expected = stage_channels(arch, None)
            if (setting.num_blocks == num_blocks and seen[:4] == expected[:4]
                    and tuple(groups) == layer_groups(arch)):
                last = None if seen[4] == expected[4] else seen[4]
                return {"arch": arch, "activation": ASSUMED_ACTIVATION, "deploy": deploy,
                        "last_channel": last}
        raise UnknownArchitecture(
            f"backbone keys look like RepVGG but its stages of {list(num_blocks)} blocks, "
            f"{list(seen)} channels, groups {sorted(set(groups))} match no arch "
            f"(known: {', '.join(ARCHS)})")

    @classmethod
    def stage_widths(cls, arch: str, last_channel: int | None = None,
                     **_: object) -> dict[int, int]:
        return dict(enumerate(stage_channels(arch, last_channel)[1:], 1))

    @classmethod
    def stage_strides(cls, **_: object) -> dict[int, int]:
        return {stage: 2 ** (stage + 1) for stage in range(1, 5)}

    @classmethod
    def describe(cls, arch: str, deploy: bool = False, **_: object) -> str:
        return f"RepVGG-{arch}{' (deploy form)' if deploy else ''}"
