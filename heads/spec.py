"""A plain description of a NanoDet architecture, from a config or inferred from weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

NANODET_MEAN_BGR = (103.53, 116.28, 123.675)
NANODET_STD_BGR = (57.375, 57.12, 58.395)


@dataclass(frozen=True)
class BackboneSpec:
    model_size: str = "1.0x"
    out_stages: tuple[int, ...] = (2, 3, 4)
    activation: str = "LeakyReLU"
    with_last_conv: bool = False


@dataclass(frozen=True)
class NeckSpec:
    kind: Literal["PAN", "GhostPAN"]
    in_channels: tuple[int, ...]
    out_channels: int
    kernel_size: int = 5
    num_extra_level: int = 0
    use_depthwise: bool = True
    activation: str | None = "LeakyReLU"  # None for PAN, which has no activation


@dataclass(frozen=True)
class HeadSpec:
    kind: Literal["NanoDetHead", "NanoDetPlusHead"]
    num_classes: int
    input_channel: int
    feat_channels: int
    stacked_convs: int
    kernel_size: int
    strides: tuple[int, ...]
    reg_max: int
    share_cls_reg: bool = True
    depthwise: bool = True
    activation: str = "LeakyReLU"

    @property
    def centre_offset(self) -> float:
        """Where NanoDet puts a cell's prior, in strides: legacy +0.5, Plus 0."""
        return 0.5 if self.kind == "NanoDetHead" else 0.0


@dataclass(frozen=True)
class ArchSpec:
    backbone: BackboneSpec
    neck: NeckSpec
    head: HeadSpec
    class_names: tuple[str, ...]
    input_size: tuple[int, int] | None = None  # (w, h) the model was trained at
    mean_bgr: tuple[float, float, float] = NANODET_MEAN_BGR
    std_bgr: tuple[float, float, float] = NANODET_STD_BGR
    source: Literal["config", "inferred"] = "config"
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_plus(self) -> bool:
        return self.head.kind == "NanoDetPlusHead"

    @property
    def name(self) -> str:
        plus = "NanoDet-Plus" if self.is_plus else "NanoDet (legacy)"
        return (f"{plus}: ShuffleNetV2 {self.backbone.model_size}, {self.neck.kind}, "
                f"{self.head.kind}, {self.head.num_classes} classes, reg_max {self.head.reg_max}, "
                f"strides {'/'.join(map(str, self.head.strides))}")

    def architecture(self) -> dict[str, Any]:
        """The parts that define the network (for comparing config and inference)."""
        return {"backbone": asdict(self.backbone), "neck": asdict(self.neck),
                "head": asdict(self.head)}

    def to_dict(self) -> dict[str, Any]:
        return {**self.architecture(), "class_names": list(self.class_names),
                "input_size": list(self.input_size) if self.input_size else None,
                "mean_bgr": list(self.mean_bgr), "std_bgr": list(self.std_bgr),
                "source": self.source, "notes": list(self.notes)}


def default_class_names(num_classes: int) -> tuple[str, ...]:
    return tuple(f"class{i}" for i in range(num_classes))


def feature_strides(out_stages: tuple[int, ...], num_extra_level: int = 0) -> tuple[int, ...]:
    """Strides of the levels a ShuffleNetV2 (stage s: stride 2**(s+1)) and extra levels give."""
    strides = [2 ** (stage + 1) for stage in out_stages]
    for _ in range(num_extra_level):
        strides.append(strides[-1] * 2)
    return tuple(strides)
