"""A plain description of a NanoDet architecture, from a config or inferred from weights.

Each part names its registered component (`kind`, the config's `name`) and holds
every constructor keyword of that component, defaults filled in from the
component's own signature (`heads.registry`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

NANODET_MEAN_BGR = (103.53, 116.28, 123.675)
NANODET_STD_BGR = (57.375, 57.12, 58.395)
# manifests written before backbones had a kind hold ShuffleNetV2's keywords without one
KINDLESS_BACKBONE = "ShuffleNetV2"


@dataclass(frozen=True, init=False)
class PartSpec:
    """One component: its registry kind and constructor keywords (read as attributes).

    Build one with `of`, which fills in the component's defaults; keywords given
    to the constructor replace those of `params` (so `dataclasses.replace(spec,
    kernel_size=3)` works).
    """

    kind: str
    params: tuple[tuple[str, Any], ...]
    registry_name: ClassVar[str] = ""

    def __init__(self, kind: str, params: tuple[tuple[str, Any], ...] = (), **keywords: Any):
        merged = {**dict(params), **keywords}
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "params", tuple(merged.items()))

    @classmethod
    def of(cls, kind: str, **keywords: Any) -> PartSpec:
        """The spec of component `kind`; keywords not given take the component's defaults."""
        from heads import registry  # the registry imports the components, which import specs

        component = getattr(registry, cls.registry_name)[kind]
        return cls(kind, tuple(registry.complete_keywords(component, keywords).items()))

    def keywords(self) -> dict[str, Any]:
        return dict(self.params)

    def get(self, name: str, default: Any = None) -> Any:
        return self.keywords().get(name, default)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "params":
            raise AttributeError(name)
        for key, value in self.params:
            if key == name:
                return value
        raise AttributeError(f"{self.kind} has no keyword {name!r}")


class BackboneSpec(PartSpec):
    registry_name = "BACKBONES"

    def as_dict(self) -> dict[str, Any]:
        kind = {} if self.kind == KINDLESS_BACKBONE else {"kind": self.kind}
        return {**kind, **self.keywords()}

    def describe(self) -> str:
        from heads.registry import BACKBONES

        return BACKBONES[self.kind].describe(**self.keywords())


class NeckSpec(PartSpec):
    registry_name = "NECKS"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.keywords()}


class HeadSpec(PartSpec):
    registry_name = "HEADS"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.keywords()}

    @property
    def centre_offset(self) -> float:
        """Where the head puts a cell's prior, in strides: legacy +0.5, Plus 0."""
        from heads.registry import HEADS

        return HEADS[self.kind].centre_offset


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
        return (f"{plus}: {self.backbone.describe()}, {self.neck.kind}, "
                f"{self.head.kind}, {self.head.num_classes} classes, reg_max {self.head.reg_max}, "
                f"strides {'/'.join(map(str, self.head.strides))}")

    def architecture(self) -> dict[str, Any]:
        """The parts that define the network (for comparing config and inference)."""
        return {"backbone": _plain(self.backbone.as_dict()), "neck": _plain(self.neck.as_dict()),
                "head": _plain(self.head.as_dict())}

    def to_dict(self) -> dict[str, Any]:
        return {**self.architecture(), "class_names": list(self.class_names),
                "input_size": list(self.input_size) if self.input_size else None,
                "mean_bgr": list(self.mean_bgr), "std_bgr": list(self.std_bgr),
                "source": self.source, "notes": list(self.notes)}


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy whose sequences are tuples, as a dataclass's asdict gave them."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def default_class_names(num_classes: int) -> tuple[str, ...]:
    return tuple(f"class{i}" for i in range(num_classes))
