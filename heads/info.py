"""Human and machine summaries of a loaded checkpoint (`convert CKPT --info`)."""

from __future__ import annotations

from typing import Any

from heads.loader import LoadedModel


def info_dict(loaded: LoadedModel) -> dict[str, Any]:
    ckpt, spec = loaded.checkpoint, loaded.spec
    params = sum(p.numel() for p in loaded.model.parameters())
    return {"checkpoint": str(ckpt.path), "sha256": ckpt.sha256, "format": ckpt.format,
            "architecture_source": spec.source, "summary": spec.name, "parameters": params,
            **spec.to_dict()}


def info_lines(loaded: LoadedModel) -> list[str]:
    d = info_dict(loaded)
    b, n, h = d["backbone"], d["neck"], d["head"]
    names = d["class_names"]
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    neck = f"{n['kind']} in {n['in_channels']} -> {n['out_channels']}"
    if n["kind"] == "GhostPAN":
        neck += (f", kernel {n['kernel_size']}, extra levels {n['num_extra_level']}, "
                 f"depthwise {n['use_depthwise']}, {n['activation']}")
    source = "from config" if d["architecture_source"] == "config" else "inferred"
    return [
        f"checkpoint   {d['checkpoint']}",
        f"format       {d['format']}",
        f"sha256       {d['sha256']}",
        f"architecture {d['summary']} ({source})",
        (f"backbone     {loaded.spec.backbone.describe()}, out_stages {b['out_stages']}"
         + (f", {b['activation']}" if "activation" in b else "")),
        f"neck         {neck}",
        (f"head         {h['kind']}: {h['num_classes']} classes, reg_max {h['reg_max']}, "
         f"strides {h['strides']}, {h['stacked_convs']} stacked "
         f"{h['kernel_size']}x{h['kernel_size']} {'depthwise ' if h['depthwise'] else ''}convs, "
         f"{h['activation']}"),
        f"input size   {d['input_size'] or 'unknown (no config)'}",
        f"classes      {shown}",
        f"parameters   {d['parameters']:,}",
        *[f"note         {note}" for note in d["notes"]],
    ]

