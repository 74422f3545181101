"""Step 1 of a conversion: what the graph computes and how its blobs are named.

`choose_rewrite` maps the options to a rewrite strategy (heads/rewrites.py);
`plan` builds the strategy's wrapper and names the blobs of its layout.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from convert.options import FIRMWARE_INPUT_SIZE, ConvertOptions
from heads.loader import LoadedModel
from heads.rewrites import (
    Layout,
    LegacyAsIs,
    PlusNativeAsIs,
    PlusToLegacyRewrite,
    RewriteStrategy,
)
from heads.spec import ArchSpec
from parity.model_folder import LEGACY_INPUT, legacy_output_names
from parity.unitv2 import MEAN_BGR, NORM_BGR

PLUS_NATIVE_INPUT, PLUS_NATIVE_OUTPUT = "data", "output"


@dataclass(frozen=True)
class ExportPlan:
    """The strategy, the module to export and its blob names."""

    rewrite: RewriteStrategy
    wrapper: nn.Module
    input_name: str
    output_names: list[str]

    @property
    def layout(self) -> Layout:
        return self.rewrite.layout


def choose_rewrite(spec: ArchSpec, options: ConvertOptions) -> RewriteStrategy:
    """Legacy heads as they are; NanoDet-Plus natively, or rewritten with --legacy-head."""
    if not spec.is_plus:
        return LegacyAsIs()
    if not options.legacy_head:
        return PlusNativeAsIs()
    return PlusToLegacyRewrite(options.stride64)


def plan(loaded: LoadedModel, rewrite: RewriteStrategy) -> ExportPlan:
    """The strategy's wrapper of the loaded model, with its layout's blob names."""
    if rewrite.layout == "legacy":
        names = LEGACY_INPUT, legacy_output_names()
    else:
        names = PLUS_NATIVE_INPUT, [PLUS_NATIVE_OUTPUT]
    return ExportPlan(rewrite, rewrite.wrapper(loaded.model), *names)


def plan_notes(spec: ArchSpec, export: ExportPlan, options: ConvertOptions) -> list[str]:
    """What the user should know about this plan (printed and kept in the manifest)."""
    notes = []
    if options.legacy_head and not spec.is_plus:
        notes.append("legacy NanoDet head: no rewrite needed; --legacy-head only sets the "
                     "firmware's blob names and layout")
    if export.layout != "legacy" and options.target == "unitv2":
        notes.append("native NanoDet-Plus layout: the UnitV2 firmware cannot decode it "
                     "(add --legacy-head for the device)")
    width, height = options.input_size
    if options.target == "unitv2" and (width, height) != FIRMWARE_INPUT_SIZE:
        notes.append(f"the UnitV2 firmware feeds 320x256; this model is exported at "
                     f"{width}x{height}")
    expected_norm = tuple(round(1 / s, 6) for s in spec.std_bgr)
    if spec.mean_bgr != MEAN_BGR or any(abs(a - b) > 2e-6 for a, b in zip(expected_norm,
                                                                           NORM_BGR)):
        notes.append(f"the model was trained with mean {spec.mean_bgr} / std {spec.std_bgr}; "
                     "the firmware normalises with NanoDet's defaults")
    return notes
