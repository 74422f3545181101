"""NanoDet-t neck: TAN, a transformer encoder over the middle level (nanodet/model/fpn/tan.py,
nanodet/model/module/transformer.py).

Three lateral 1x1 conv+BN+act; the outer levels are resized to the middle one, concatenated,
reduced to `out_channels` and run through transformer encoders with a learned position
embedding; the result is added back to every level. The embedding fixes the middle level's
size: its height x width must equal `feature_hw[0] * feature_hw[1]` (20x20 in nanodet-t, a
320x320 input).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from heads.activations import activation_layer
from heads.component import Keywords, Neck
from heads.conv_modules import ConvModule
from heads.schema import (
    ACTIVATION,
    CHANNELS,
    Check,
    ConfigProblem,
    Schema,
    expected,
    integer,
    integers,
)
from heads.weights import ASSUMED_ACTIVATION, StateDict, UnknownArchitecture, count, shape

LEVELS = 3  # NanoDet's TAN takes exactly three levels
ASSUMED_NUM_HEADS = 8  # not stored in the weights: nanodet-t's value
ASSUMED_DROPOUT_RATIO = 0.1  # not stored in the weights (and inert in eval): nanodet-t's value
ENCODER_KEY = "fpn.transformer.encoders.0.attn.in_proj_weight"


def number(low: float, high: float, low_open: bool = False) -> Check:
    """A finite int or float in [low, high] (or (low, high] when `low_open`)."""
    def check(value: Any, key: str) -> float:
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not is_number or not math.isfinite(value) or not low <= value <= high or \
                (low_open and value == low):
            bound = "above" if low_open else "from"
            raise expected(key, f"a number {bound} {low} up to {high}", value)
        return value
    return check


class MLP(nn.Module):
    """fc1 -> act -> dropout -> fc2 -> dropout, on (tokens, batch, channels)."""

    def __init__(self, in_dim: int, hidden_dim: int, dropout_ratio: float, activation: str):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = activation_layer(activation)
        self.fc2 = nn.Linear(hidden_dim, in_dim)
        self.drop = nn.Dropout(dropout_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def self_attention(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """`attn(x, x, x)[0]` for batch-first (batch, tokens, channels), written out in matmuls and
    a softmax: it exports at opset 11 (torch's module needs 13), and with the batch as the
    first dimension of every reshape, as converters to ncnn expect."""
    batch, tokens, channels = x.shape
    heads = attn.num_heads
    head_dim = channels // heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(batch, tokens, heads, head_dim).transpose(1, 2) for t in (q, k, v))
    weights = torch.matmul(q * math.sqrt(1.0 / head_dim), k.transpose(-2, -1)).softmax(dim=-1)
    weights = F.dropout(weights, attn.dropout, training=attn.training)
    out = torch.matmul(weights, v).transpose(1, 2).reshape(batch, tokens, channels)
    return attn.out_proj(out)


class TransformerEncoder(nn.Module):
    """Pre-norm encoder layer: x + attn(norm1(x)), then x + mlp(norm2(x)); x batch-first."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout_ratio: float,
                 activation: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(embed_dim=dim, num_heads=num_heads,
                                          dropout=dropout_ratio)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout_ratio, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        x = x + self_attention(self.attn, normed)
        return x + self.mlp(self.norm2(x))


class TransformerBlock(nn.Module):
    """1x1 conv (bias, ReLU) to `out_channels`, flatten to tokens, add positions, encoders.

    `linear` is built by NanoDet but never used; it is kept so its weights load.
    """

    def __init__(self, in_channels: int, out_channels: int, num_heads: int, num_encoders: int,
                 mlp_ratio: float, dropout_ratio: float, activation: str):
        super().__init__()
        self.conv = nn.Identity() if in_channels == out_channels else \
            ConvModule(in_channels, out_channels, 1, use_norm=False, activation="ReLU")
        self.linear = nn.Linear(out_channels, out_channels)
        self.encoders = nn.Sequential(*(
            TransformerEncoder(out_channels, num_heads, mlp_ratio, dropout_ratio, activation)
            for _ in range(num_encoders)))

    def forward(self, x: torch.Tensor, pos_embed: torch.Tensor) -> torch.Tensor:
        """NanoDet's tokens are (tokens, batch, channels); these are batch-first, which is
        the same arithmetic in another memory layout."""
        batch, _, height, width = x.shape
        tokens = self.conv(x).flatten(2).transpose(1, 2) + pos_embed.transpose(0, 1)
        tokens = self.encoders(tokens)
        return tokens.transpose(1, 2).reshape(batch, -1, height, width)


class TAN(Neck):
    """Transformer attention network; NanoDet gives only `activation` a default."""

    CONFIG_KEYS: ClassVar[Schema] = {
        "in_channels": integers(1, 4096, min_len=LEVELS, max_len=LEVELS),
        "out_channels": CHANNELS,
        "feature_hw": integers(1, 512, min_len=2, max_len=2),
        "num_heads": integer(1, 256),
        "num_encoders": integer(1, 32),
        "mlp_ratio": number(0, 64, low_open=True),
        "dropout_ratio": number(0, 1),
        "activation": ACTIVATION,
    }
    WEIGHTS_HINT = "TAN (fpn.transformer.encoders + fpn.pos_embed)"
    WEIGHTS_PREFIX = "fpn.transformer.encoders."
    # for heads.infer to add to the notes of an inferred TAN
    INFERENCE_NOTES: ClassVar[tuple[str, ...]] = (
        (f"TAN num_heads is not stored in the weights: assumed {ASSUMED_NUM_HEADS} "
         "(nanodet-t's); give --config if the model used another"),
        "TAN feature_hw is stored only as a number of cells: taken as square")

    def __init__(self, *, in_channels: tuple[int, ...], out_channels: int,
                 feature_hw: tuple[int, int], num_heads: int, num_encoders: int,
                 mlp_ratio: float, dropout_ratio: float, activation: str = "LeakyReLU"):
        super().__init__()
        if len(in_channels) != LEVELS:
            raise ValueError(f"TAN takes {LEVELS} levels, not {len(in_channels)}")
        if out_channels % num_heads:
            raise ValueError(f"TAN out_channels {out_channels} is not divisible by "
                             f"num_heads {num_heads}")
        self.lateral_convs = nn.ModuleList(
            ConvModule(c, out_channels, 1, activation=activation) for c in in_channels)
        self.transformer = TransformerBlock(out_channels * LEVELS, out_channels, num_heads,
                                            num_encoders, mlp_ratio, dropout_ratio, activation)
        self.pos_embed = nn.Parameter(torch.zeros(feature_hw[0] * feature_hw[1], 1, out_channels))

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        low, mid, top = (conv(x) for conv, x in zip(self.lateral_convs, inputs))
        mid_size = mid.shape[2:]
        problem = self.size_problem(mid_size[0] * mid_size[1], self.pos_embed.shape[0])
        if problem:
            raise ValueError(f"{problem} (the middle level is {mid_size[0]}x{mid_size[1]})")
        joined = torch.cat((F.interpolate(low, size=mid_size, mode="bilinear"), mid,
                            F.interpolate(top, size=mid_size, mode="bilinear")), dim=1)
        attended = self.transformer(joined, self.pos_embed)
        return [low + F.interpolate(attended, size=low.shape[2:], mode="bilinear"),
                mid + attended,
                top + F.interpolate(attended, size=top.shape[2:], mode="bilinear")]

    @staticmethod
    def size_problem(middle_cells: int, embedded_cells: int) -> str | None:
        if middle_cells == embedded_cells:
            return None
        return (f"TAN's position embedding has {embedded_cells} cells, so the middle level "
                f"must have that many, not {middle_cells}")

    @classmethod
    def input_size_problem(cls, input_size: tuple[int, int], middle_stride: int,
                           feature_hw: tuple[int, int], **_: object) -> str | None:
        """Why TAN cannot take a (w, h) input whose middle level has `middle_stride`, or None.

        NanoDet trains TAN at one input size: feature_hw times the middle level's stride.
        """
        width, height = (side // middle_stride for side in input_size)
        problem = cls.size_problem(width * height, feature_hw[0] * feature_hw[1])
        if problem is None:
            return None
        trained = "x".join(str(side * middle_stride) for side in reversed(feature_hw))
        return (f"input {input_size[0]}x{input_size[1]} gives a {width}x{height} middle level "
                f"but TAN was trained with feature_hw {list(feature_hw)} (e.g. input {trained})")

    @classmethod
    def keywords_from_config(cls, values: Keywords) -> Keywords:
        out_channels, num_heads = values.get("out_channels"), values.get("num_heads")
        if out_channels is not None and num_heads is not None and out_channels % num_heads:
            raise ConfigProblem(f"model.arch.fpn.num_heads: out_channels {out_channels} is not "
                                f"divisible by num_heads {num_heads}")
        return values

    @classmethod
    def keywords_from_weights(cls, sd: StateDict) -> Keywords | None:
        if ENCODER_KEY not in sd and "fpn.pos_embed" not in sd:
            return None
        laterals = count(sd, "fpn.lateral_convs")
        if laterals != LEVELS:
            raise UnknownArchitecture(f"fpn keys look like TAN but it has {laterals} lateral "
                                      f"convs, not {LEVELS}")
        lateral_shapes = [shape(sd, f"fpn.lateral_convs.{i}.conv.weight") for i in range(LEVELS)]
        width = lateral_shapes[0][0]
        return {"in_channels": tuple(s[1] for s in lateral_shapes), "out_channels": width,
                "feature_hw": _square_feature_hw(sd, width),
                "num_heads": _assumed_num_heads(width),
                "num_encoders": count(sd, "fpn.transformer.encoders"),
                "mlp_ratio": _mlp_ratio(sd, width), "dropout_ratio": ASSUMED_DROPOUT_RATIO,
                "activation": ASSUMED_ACTIVATION}


def _square_feature_hw(sd: StateDict, width: int) -> tuple[int, int]:
    """feature_hw from fpn.pos_embed, which holds only h*w: taken as square."""
    positions, one, channels = shape(sd, "fpn.pos_embed", ndim=3)
    side = math.isqrt(positions)
    if (one, channels) != (1, width) or side * side != positions:
        raise UnknownArchitecture(f"fpn keys look like TAN but fpn.pos_embed has shape "
                                  f"{(positions, one, channels)}, not (side*side, 1, {width}) "
                                  "(feature_hw is not stored: give --config)")
    return side, side


def _assumed_num_heads(width: int) -> int:
    if width % ASSUMED_NUM_HEADS:
        raise UnknownArchitecture(f"fpn keys look like TAN but its width {width} is not "
                                  f"divisible by {ASSUMED_NUM_HEADS} heads (num_heads is not "
                                  "stored: give --config)")
    return ASSUMED_NUM_HEADS


def _mlp_ratio(sd: StateDict, width: int) -> float:
    """A ratio for which NanoDet's int(width * mlp_ratio) is the stored MLP width."""
    hidden = shape(sd, "fpn.transformer.encoders.0.mlp.fc1.weight", ndim=2)[0]
    if hidden % width == 0:
        return hidden // width
    ratio = hidden / width
    return ratio if int(width * ratio) == hidden else (hidden + 0.5) / width
