"""Step 2 of a conversion: the plan's graph as files (ONNX, simplified ONNX, NCNN), linted.

`export_graph` writes model.onnx, model.sim.onnx, model.param and model.bin into
a folder; pnnx's by-products stay in a work folder inside it, removed at the end.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError, StageError
from convert.clock import StageClock
from convert.ncnn_lint import lint_param
from convert.plan import ExportPlan
from convert.stages import export_onnx, run_pnnx, simplify_onnx
from parity.model_folder import (
    BIN_FILE,
    ONNX_FILE,
    PARAM_FILE,
    SIM_ONNX_FILE,
)
from parity.ncnn_param import Param
from parity.targets import Target

PNNX_WORK = ".pnnx-work"  # inside the folder, removed before export_graph returns


@dataclass(frozen=True)
class GraphFiles:
    onnx: Path
    sim_onnx: Path
    param: Path
    bin: Path


def export_graph(export: ExportPlan, input_size: tuple[int, int], opset: int, fp16: bool,
                 folder: Path, clock: StageClock | None = None) -> GraphFiles:
    """Stages onnx-export, onnxsim and pnnx: the plan's graph in `folder`."""
    clock = clock or StageClock()
    width, height = input_size
    files = GraphFiles(folder / ONNX_FILE, folder / SIM_ONNX_FILE, folder / PARAM_FILE,
                       folder / BIN_FILE)
    with clock.stage("onnx-export"):
        export_onnx(export.wrapper, files.onnx, width, height, export.input_name,
                    export.output_names, opset)
    with clock.stage("onnxsim"):
        simplify_onnx(files.onnx, files.sim_onnx)
    work = folder / PNNX_WORK
    try:
        with clock.stage("pnnx"):
            work.mkdir()
            param, weights = run_pnnx(files.sim_onnx, work, width, height, fp16)
            _name_blobs(param, export, input_size)
            shutil.copyfile(param, files.param)
            shutil.copyfile(weights, files.bin)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return files


def _name_blobs(param_path: Path, export: ExportPlan, input_size: tuple[int, int]) -> None:
    """pnnx names blobs in0/out0...; give them the names consumers look up, and keep the
    input size out of the legacy layout's Reshapes."""
    try:
        param = Param.read(param_path)
    except InputError as exc:  # it names pnnx's temporary file, gone after this run
        raise StageError("pnnx", f"wrote a param this tool cannot read: {exc.problem}") from None
    param.rename_blob("in0", export.input_name)
    for index, name in enumerate(export.output_names):
        param.rename_blob(f"out{index}", name)
    if export.layout == "legacy":
        width, height = input_size
        param.unbake_cell_counts({(width // s) * (height // s) for s in export.level_strides})
    param.write(param_path)


def lint_graph(graph: GraphFiles, target: Target) -> None:
    """Stage lint: a StageError when the target's ncnn cannot run the graph."""
    findings = lint_param(graph.param, graph.bin, target=target.name, tables=target.tables)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise StageError("lint", f"the {target.name} ncnn cannot run this model: "
                         f"{errors[0]}{more}")
