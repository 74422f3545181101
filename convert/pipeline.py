"""The conversion pipeline: checkpoint -> verified UnitV2 / NCNN model folder.

Steps, each taking and returning values (file I/O at the edges):
`plan(loaded, rewrite) -> ExportPlan` (convert/plan.py), `export_graph(plan, ...)
-> GraphFiles` and `lint_graph` (convert/graph.py), `build_folder(...) -> manifest`
and `verdict(...) -> Verification` (here). `convert_model(checkpoint, options)`
composes them; `convert_checkpoint(...)` is the same with keyword options.

Stages: load, wrap, onnx-export, onnxsim, pnnx, lint, write, verify. Paths and
options are checked before any work (convert/options.py, convert/outputs.py).
Everything is written into a locked partial folder beside the output and
renamed into place at the end; an error, Ctrl-C or SIGTERM at any point leaves
nothing behind (see convert/outputs.py for --force and convert/stages.py for logs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import EXIT_CHECK_FAILED, EXIT_OK, InputError, StageError
from common.threads import limit_threads
from common.versions import tool_versions
from convert.clock import STAGES, StageClock
from convert.graph import export_graph, lint_graph
from convert.options import ConvertOptions
from convert.outputs import OutputPlan, Staging, plan_output, staged_output
from convert.package import (
    check_firmware_json,
    write_firmware_json,
    write_manifest,
    write_tar,
)
from convert.plan import ExportPlan, choose_rewrite, normalisation_problem, plan, plan_notes
from convert.verify import Verification, verify_folder
from heads.loader import LoadedModel, load_detector
from heads.rewrites import RewriteStrategy
from parity.synthetic import default_frames

Report = Callable[[str], None]


@dataclass
class ConvertResult:
    folder: Path
    manifest: dict[str, Any]
    verification: Verification | None
    rewrite: RewriteStrategy
    tar: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool | None:
        """The verification's verdict; None when it was skipped (--no-verify)."""
        return None if self.verification is None else self.verification.passed

    @property
    def exit_code(self) -> int:
        failed = self.verification is not None and not self.verification.passed
        return EXIT_CHECK_FAILED if failed else EXIT_OK


def build_folder(folder: Path, loaded: LoadedModel, export: ExportPlan, options: ConvertOptions,
                 notes: list[str]) -> dict[str, Any]:
    """Stage write: model.json (legacy layout) and a first manifest.json beside the graph."""
    if export.layout == "legacy":
        write_firmware_json(folder, list(loaded.spec.class_names), export.output_names,
                            target=options.firmware_target)
    manifest = model_manifest(loaded, export, options, notes)
    write_manifest(folder, manifest)
    return manifest


def verdict(loaded: LoadedModel, export: ExportPlan, folder: Path, options: ConvertOptions,
            progress: Callable[[int, int], None] | None = None) -> Verification:
    """Stage verify: a parity check (profile verify) of the written `folder` on the photos."""
    config = Path(options.config) if options.config is not None else None
    return verify_folder(loaded, folder, options.frames or default_frames(),
                         options.input_size, export.layout, config, progress)


def photos_done(report: Report) -> Callable[[int, int], None]:
    """verify's progress as `report` lines '[8/8] verify <done>/<total> photos ...'."""
    number = f"[{STAGES.index('verify') + 1}/{len(STAGES)}]"
    return lambda done, total: report(f"{number} verify {done}/{total} photos ...")


def convert_model(checkpoint: str | Path, options: ConvertOptions, *,
                  rewrite: RewriteStrategy | None = None,
                  report: Report | None = None) -> ConvertResult:
    """Convert a checkpoint into an NCNN model folder (see README).

    `rewrite`: the strategy to export with, instead of the one the checkpoint and
    the options choose. `report` gets a line as each stage starts and ends
    (convert/clock.py). Sets this process (and pnnx) to one compute thread per
    library (common.threads)."""
    limit_threads()
    checkpoint = Path(checkpoint)
    destination = plan_output(
        options.output_folder(checkpoint), force=options.force, tar=options.tar,
        inputs={"the checkpoint": checkpoint, "the --config file": options.config,
                "the --class-names file": options.class_names})
    clock = StageClock(report)
    with staged_output(destination) as staging:
        folder = staging.folder.path
        with clock.stage("load"):
            loaded = load_detector(checkpoint, options.config, options.class_names)
        with clock.stage("wrap"):
            export = plan(loaded, rewrite or choose_rewrite(loaded.spec, options),
                          options.firmware_target)
        if export.layout == "legacy":
            check_firmware_json(options.class_names or options.config or checkpoint,
                                list(loaded.spec.class_names), export.output_names,
                                target=options.firmware_target)
        problem = normalisation_problem(loaded.spec, options.firmware_target)
        if problem:
            raise InputError(options.config or checkpoint, problem)
        notes = plan_notes(loaded.spec, export, options)
        graph = export_graph(export, options.input_size, options.opset, options.fp16, folder,
                             clock)
        with clock.stage("lint"):
            lint_graph(graph, options.firmware_target)
        with clock.stage("write"):
            manifest = build_folder(folder, loaded, export, options, notes)
        verification = None
        if options.verify:
            with clock.stage("verify"):
                verification = verdict(loaded, export, folder, options,
                                       photos_done(clock.report))
        manifest = _final_manifest(folder, manifest, verification, clock.timings)
        _publish(staging, destination)
    return ConvertResult(destination.folder, manifest, verification, export.rewrite,
                         destination.archive, notes)


def convert_checkpoint(checkpoint: str | Path, *, config: str | Path | None = None,
                       class_names: str | Path | None = None, legacy_head: bool = False,
                       output: str | Path | None = None,
                       input_size: tuple[int, int] | None = None,
                       target: str = "unitv2", fp16: bool = True, stride64: str = "fold",
                       tar: bool = False, force: bool = False, verify: bool = True,
                       opset: int = 11, frames: list[tuple[str, Any]] | None = None,
                       report: Report | None = None) -> ConvertResult:
    """`convert_model` with the options as keywords (those of ConvertOptions)."""
    options = ConvertOptions(config=config, class_names=class_names, legacy_head=legacy_head,
                             output=output, input_size=input_size, target=target, fp16=fp16,
                             stride64=stride64, tar=tar, force=force, verify=verify,
                             opset=opset, frames=frames)
    return convert_model(checkpoint, options, report=report)


_STAMPED = ("manifest_version", "written_by", "files")  # write_manifest sets these


def _final_manifest(folder: Path, manifest: dict[str, Any], verification: Verification | None,
                    timings: dict[str, float]) -> dict[str, Any]:
    """manifest.json again, with the verdict and the stage timings."""
    manifest["verification"] = (
        {"status": "passed" if verification.passed else "failed", **verification.to_dict()}
        if verification else {"status": "skipped"})
    manifest["stage_seconds"] = timings
    return write_manifest(folder, {k: v for k, v in manifest.items() if k not in _STAMPED})


def _publish(staging: Staging, destination: OutputPlan) -> None:
    """The archive (--tar) from the finished folder, then both renamed into place."""
    if staging.archive is not None:
        try:
            write_tar(staging.folder.path, staging.archive.path, destination.folder.name)
        except OSError as exc:
            raise StageError("write", f"cannot write {destination.archive} "
                             f"({exc.strerror})") from None
    staging.publish()


def model_manifest(loaded: LoadedModel, export: ExportPlan, options: ConvertOptions,
                   notes: list[str]) -> dict[str, Any]:
    """manifest.json's description of the model folder (before files and verdict)."""
    ckpt = loaded.checkpoint
    width, height = options.input_size
    normalisation = options.firmware_target.normalisation
    return {
        "tool": tool_versions(),
        "checkpoint": {"file": ckpt.path.name, "sha256": ckpt.sha256, "format": ckpt.format},
        "architecture": loaded.spec.to_dict(),
        "input": {"name": export.input_name, "width": width, "height": height,
                  "pixel_format": "BGR", "mean": list(normalisation.mean_bgr),
                  "norm": list(normalisation.norm_bgr),
                  "letterbox": "long side to the net size, pad to it evenly with 0 "
                               "(before normalising)"},
        "layout": export.layout,
        "outputs": export.output_names,
        "rewrite": export.rewrite.manifest_entry(loaded.spec),
        "target": options.target,
        "weights": "fp16" if options.fp16 else "fp32",
        "onnx_opset": options.opset,
        "notes": notes,
    }


__all__ = ["ConvertOptions", "ConvertResult", "build_folder", "convert_checkpoint",
           "convert_model", "model_manifest", "verdict"]
