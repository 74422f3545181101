"""NanoDet's TIMMWrapper backbone (nanodet/model/backbone/timm_wrapper.py) for timm's small
ConvNeXt models, rebuilt without timm.

NanoDet builds `timm.create_model(model_name, features_only=True, ...)` under `self.timm`.
timm's features_only model flattens the network's top-level sequences into children named
`stem_0`, `stem_1`, `stages_0` ... and keeps them only up to the last stage it outputs; this
module rebuilds that tree with timm's names (timm 1.0), so the official checkpoints load with
no timm installed. Weights are always the checkpoint's: `pretrained` and `checkpoint_path`
are checked and ignored, nothing is downloaded.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from heads.component import Backbone, Keywords
from heads.schema import ConfigProblem, Schema, boolean, choice, integer, integers
from heads.untrusted import shown
from heads.weights import StateDict, UnknownArchitecture, count, shape

# timm's convnext_* with conv MLPs (timm/models/convnext.py): block depths, stage widths
CONVNEXT_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "convnext_atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "convnext_femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "convnext_pico": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "convnext_nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
}
STEM_STRIDE = 4


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (timm's, eps 1e-6)."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return x.permute(0, 3, 1, 2)


class ConvMlp(nn.Module):
    """1x1 conv -> GELU -> 1x1 conv (timm's Mlp with use_conv; its dropouts are 0)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConvNeXtBlock(nn.Module):
    """x + gamma * mlp(norm(dwconv7x7(x))); `gamma` is the layer scale."""

    def __init__(self, channels: int, mlp_ratio: int = 4):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), 1e-6))
        self.conv_dw = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = LayerNorm2d(channels)
        self.mlp = ConvMlp(channels, mlp_ratio * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.mlp(self.norm(self.conv_dw(x)))
        return residual.mul(self.gamma.reshape(1, -1, 1, 1)) + x


class ConvNeXtStage(nn.Module):
    """Downsample (LayerNorm, 2x2 stride-2 conv; none in the first stage), then blocks."""

    def __init__(self, in_channels: int, out_channels: int, depth: int):
        super().__init__()
        self.downsample: nn.Module = nn.Identity() if in_channels == out_channels else \
            nn.Sequential(LayerNorm2d(in_channels), nn.Conv2d(in_channels, out_channels, 2, 2))
        self.blocks = nn.Sequential(*(ConvNeXtBlock(out_channels) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ConvNeXtFeatures(nn.Module):
    """timm's features_only ConvNeXt: stem_0/stem_1, then stages_0.. up to the last output."""

    def __init__(self, model_name: str, in_channels: int, out_indices: tuple[int, ...]):
        super().__init__()
        depths, widths = CONVNEXT_VARIANTS[model_name]
        self.out_indices = tuple(out_indices)
        self.stem_0 = nn.Conv2d(in_channels, widths[0], STEM_STRIDE, STEM_STRIDE)
        self.stem_1 = LayerNorm2d(widths[0])
        previous = widths[0]
        for index in range(max(out_indices) + 1):
            self.add_module(f"stages_{index}",
                            ConvNeXtStage(previous, widths[index], depths[index]))
            previous = widths[index]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem_1(self.stem_0(x))
        outputs = []
        for index in range(max(self.out_indices) + 1):
            x = getattr(self, f"stages_{index}")(x)
            if index in self.out_indices:
                outputs.append(x)
        return outputs


def _never_downloaded(value: Any, key: str) -> Any:
    """pretrained / checkpoint_path: checked, then ignored (the checkpoint holds the weights)."""
    if not isinstance(value, (bool, str)):
        raise ConfigProblem(f"{key}: expected true, false or a path, got {shown(value)}")
    return value


def _features_only(value: Any, key: str) -> bool:
    if boolean(value, key) is not True:
        raise ConfigProblem(f"{key}=false is not supported (a backbone gives feature maps)")
    return value


def _output_stride(value: Any, key: str) -> int:
    if value != 32 or isinstance(value, bool):
        raise ConfigProblem(f"{key}={shown(value)} is not supported (only 32, timm's default)")
    return value


class TIMMWrapper(Backbone):
    """timm's ConvNeXt (atto/femto/pico/nano) as NanoDet wraps it; `out_stages` is the config's
    out_indices (timm's default: all four stages, strides 4, 8, 16, 32)."""

    CONFIG_KEYS: ClassVar[Schema] = {
        "model_name": choice(tuple(CONVNEXT_VARIANTS), "a timm model this tool rebuilds"),
        "features_only": _features_only,
        "pretrained": _never_downloaded,
        "checkpoint_path": _never_downloaded,
        "in_channels": integer(1, 16),
        "out_indices": integers(0, 3, max_len=4),
        "output_stride": _output_stride,
    }
    WEIGHTS_HINT = "timm ConvNeXt backbone keys (backbone.timm.stem_0)"
    WEIGHTS_PREFIX = "backbone.timm.stem_0."

    def __init__(self, *, model_name: str, in_channels: int = 3,
                 out_stages: tuple[int, ...] = (0, 1, 2, 3)):
        super().__init__()
        if model_name not in CONVNEXT_VARIANTS:
            raise ValueError(f"timm model {model_name!r} is not rebuilt here "
                             f"(known: {', '.join(CONVNEXT_VARIANTS)})")
        self.out_stages = tuple(out_stages)
        self.timm = ConvNeXtFeatures(model_name, in_channels, self.out_stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.timm(x)

    @classmethod
    def keywords_from_config(cls, values: Keywords) -> Keywords:
        keywords = {k: v for k, v in values.items() if k in ("model_name", "in_channels")}
        if "out_indices" in values:
            keywords["out_stages"] = values["out_indices"]
        return keywords

    @classmethod
    def keywords_from_weights(cls, sd: StateDict) -> Keywords | None:
        if not any(k.startswith("backbone.timm.") for k in sd):
            return None
        if "backbone.timm.stem_0.weight" not in sd:
            first = next(k for k in sd if k.startswith("backbone.timm."))
            raise UnknownArchitecture(f"backbone keys look like a timm model ({first}) but not "
                                      f"a ConvNeXt this tool rebuilds "
                                      f"(known: {', '.join(CONVNEXT_VARIANTS)})")
        stem = shape(sd, "backbone.timm.stem_0.weight")
        stages = [f"backbone.timm.stages_{i}" for i in range(4)
                  if f"backbone.timm.stages_{i}.blocks.0.conv_dw.weight" in sd]
        depths = tuple(count(sd, f"{stage}.blocks") for stage in stages)
        widths = tuple(shape(sd, f"{stage}.blocks.0.conv_dw.weight")[0] for stage in stages)
        for name, (known_depths, known_widths) in CONVNEXT_VARIANTS.items():
            if depths == known_depths[:len(depths)] and widths == known_widths[:len(widths)]:
                return {"model_name": name, "in_channels": stem[1]}
        raise UnknownArchitecture(f"backbone keys look like timm's ConvNeXt but its depths "
                                  f"{list(depths)} and widths {list(widths)} match no "
                                  f"{', '.join(CONVNEXT_VARIANTS)}")

    @classmethod
    def stage_widths(cls, model_name: str, **_: object) -> dict[int, int]:
        return dict(enumerate(CONVNEXT_VARIANTS[model_name][1]))

    @classmethod
    def stage_strides(cls, **_: object) -> dict[int, int]:
        return {index: STEM_STRIDE * 2 ** index for index in range(4)}

    @classmethod
    def describe(cls, model_name: str, **_: object) -> str:
        return f"timm {model_name}"
