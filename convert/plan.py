"""Step 1 of a conversion: what the graph computes and how its blobs are named.

`choose_rewrite` maps the options to a rewrite strategy (heads/rewrites.py);
`plan` builds the strategy's wrapper and names the blobs of its layout.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from convert.options import ConvertOptions
from heads.loader import LoadedModel
from heads.rewrites import (
    Layout,
    LegacyAsIs,
    PlusNativeAsIs,
    PlusToLegacyRewrite,
    RewriteStrategy,
)
from heads.spec import ArchSpec
from heads.target_ops import export_form
from parity.targets import Target

PLUS_NATIVE_INPUT, PLUS_NATIVE_OUTPUT = "data", "output"


@dataclass(frozen=True)
class ExportPlan:
    """The strategy, the module to export and its blob names."""

    rewrite: RewriteStrategy
    wrapper: nn.Module
    input_name: str
    output_names: list[str]
    level_strides: tuple[int, ...] = ()  # legacy layout: the stride of each output pair

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


def plan(loaded: LoadedModel, rewrite: RewriteStrategy, target: Target) -> ExportPlan:
    """The strategy's wrapper of the model in its export form for the target's ncnn (RepVGG
    fused; ops the old ncnn lacks rewritten, heads/target_ops.py), with its layout's blob
    names (the legacy layout's are the target's)."""
    wrapper = rewrite.wrapper(export_form(loaded.model, target.ncnn_tables))
    if rewrite.layout == "legacy":
        return ExportPlan(rewrite, wrapper, target.blobs.input, target.blobs.outputs(),
                          target.blobs.strides)
    return ExportPlan(rewrite, wrapper, PLUS_NATIVE_INPUT, [PLUS_NATIVE_OUTPUT])


def plan_notes(spec: ArchSpec, export: ExportPlan, options: ConvertOptions) -> list[str]:
    """What the user should know about this plan (printed and kept in the manifest)."""
    notes = []
    if options.legacy_head and not spec.is_plus:
        notes.append("legacy NanoDet head: no rewrite needed; --legacy-head only sets the "
                     "firmware's blob names and layout")
    device = options.firmware_target.device
    if export.layout != "legacy" and device is not None:
        notes.append(f"native NanoDet-Plus layout: the {device.name} firmware cannot decode it "
                     "(add --legacy-head for the device)")
    width, height = options.input_size
    if device is not None and (width, height) != device.net_size:
        notes.append(f"the {device.name} firmware feeds {device.net_size[0]}x"
                     f"{device.net_size[1]}; this model is exported at {width}x{height}")
    if device is None and not same_normalisation(spec, options.firmware_target):
        notes.append(f"the model was trained with mean {spec.mean_bgr} / std {spec.std_bgr}; "
                     "feed it so (NanoDet's defaults differ)")
    return notes


def same_normalisation(spec: ArchSpec, target: Target) -> bool:
    """The model was trained with the mean and std the target normalises with."""
    expected_norm = tuple(round(1 / s, 6) for s in spec.std_bgr)
    normalisation = target.normalisation
    return spec.mean_bgr == normalisation.mean_bgr and all(
        abs(a - b) <= 2e-6 for a, b in zip(expected_norm, normalisation.norm_bgr))


def normalisation_problem(spec: ArchSpec, target: Target) -> str | None:
    """Why a device cannot feed this model: its firmware normalises with fixed numbers."""
    if target.device is None or same_normalisation(spec, target):
        return None
    fixed = target.normalisation
    return (f"the model was trained with mean {list(spec.mean_bgr)} / std "
            f"{list(spec.std_bgr)}, but the {target.device.name} firmware always normalises "
            f"with mean {list(fixed.mean_bgr)} / norm {list(fixed.norm_bgr)}: on the device "
            "it would see other inputs than in training; use --target ncnn-latest (and feed "
            "it as trained) or retrain with NanoDet's normalisation")
