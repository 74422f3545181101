"""What a registered backbone, neck or head class offers besides its constructor.

A component is an `nn.Module` built with keyword arguments only; its
constructor's defaults are the defaults of the config section it is built from
(NanoDet's own). Next to the module live the checks of the config keys it reads
(`CONFIG_KEYS`) and how to read its keywords back from a state_dict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from heads.schema import Schema
from heads.weights import StateDict

Keywords = dict[str, Any]


class Component(nn.Module):
    """Base of registered components; it adds no parameters or buffers."""

    CONFIG_KEYS: ClassVar[Schema] = {}  # config key -> check, in the order keys are checked
    WEIGHTS_HINT: ClassVar[str] = ""  # the state_dict keys that identify it, for messages
    WEIGHTS_PREFIX: ClassVar[str] = ""  # what its identifying keys start with ("": none)
    # what inference from weights had to assume for it (added to an inferred spec's notes)
    INFERENCE_NOTES: ClassVar[tuple[str, ...]] = ()
    DROPPED_CONFIG_KEYS: ClassVar[tuple[str, ...]] = ()  # checked, then not used (`pretrain`)
    RENAMED_CONFIG_KEYS: ClassVar[dict[str, str]] = {}  # deprecated key -> its keyword

    @classmethod
    def keywords_from_config(cls, values: Keywords) -> Keywords:
        """Constructor keywords from the checked config values that were given: dropped
        keys left out, deprecated ones renamed (a deprecated key given wins, as in NanoDet)."""
        keywords = {k: v for k, v in values.items() if k not in cls.DROPPED_CONFIG_KEYS}
        for old, new in cls.RENAMED_CONFIG_KEYS.items():
            if old in keywords:
                keywords[new] = keywords.pop(old)
        return keywords


class Backbone(Component):
    out_stages: tuple[int, ...]

    def stage_outputs(self, x: torch.Tensor,
                      stages: Iterable[tuple[int, Callable[[torch.Tensor], torch.Tensor]]]
                      ) -> list[torch.Tensor]:
        """Run `stages` ((index, stage) pairs) in order from `x`; the outputs of those whose
        index is in `out_stages`."""
        outputs = []
        for index, stage in stages:
            x = stage(x)
            if index in self.out_stages:
                outputs.append(x)
        return outputs

    @classmethod
    def keywords_from_weights(cls, sd: StateDict) -> Keywords | None:
        """Keywords (all but out_stages) seen in `sd`, or None when `sd` holds no such backbone.

        Raises `heads.weights.UnknownArchitecture` when it does but they are unusable.
        """
        raise NotImplementedError

    @classmethod
    def stage_widths(cls, **keywords: Any) -> dict[int, int]:
        """Output channels of every stage `out_stages` may name."""
        raise NotImplementedError

    @classmethod
    def stage_strides(cls, **keywords: Any) -> dict[int, int]:
        """Stride of every stage `out_stages` may name."""
        raise NotImplementedError

    @classmethod
    def describe(cls, **keywords: Any) -> str:
        """A short name for summaries, e.g. 'ShuffleNetV2 1.5x'."""
        return cls.__name__


class Neck(Component):
    @classmethod
    def keywords_from_weights(cls, sd: StateDict) -> Keywords | None:
        """Keywords seen in `sd`, or None when `sd` holds no such neck."""
        raise NotImplementedError


class Head(Component):
    centre_offset: ClassVar[float] = 0.0  # where a cell's prior sits, in strides

    @classmethod
    def keywords_from_weights(cls, sd: StateDict, strides: tuple[int, ...]) -> Keywords | None:
        """Keywords seen in `sd` for levels of `strides`, or None when `sd` holds no such head."""
        raise NotImplementedError
