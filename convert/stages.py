"""The converter's stages that call other tools: ONNX export, onnxsim, pnnx."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from heads.errors import StageError


def export_onnx(wrapper: nn.Module, path: Path, input_w: int, input_h: int, input_name: str,
                output_names: list[str], opset: int = 11) -> None:
    """torch.onnx.export (TorchScript exporter) of a fixed 1x3xHxW input."""
    dummy = torch.zeros(1, 3, input_h, input_w)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper.eval(), dummy, str(path), opset_version=opset,
                              input_names=[input_name], output_names=output_names,
                              do_constant_folding=True, dynamo=False)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise StageError("onnx-export", f"torch.onnx.export failed: {_one_line(exc)}") from None


def simplify_onnx(src: Path, dst: Path, log_path: Path, check_n: int = 3) -> None:
    """onnxsim with its numeric check (random inputs, onnxruntime) turned on."""
    import onnxsim

    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            model, ok = onnxsim.simplify(onnx.load(str(src)), check_n=check_n)
    except Exception as exc:  # noqa: BLE001 - onnxsim raises many types
        log_path.write_text(log.getvalue() + f"\n{exc}\n")
        raise StageError("onnxsim", f"simplification failed: {_one_line(exc)} "
                         f"(log: {log_path})") from None
    log_path.write_text(log.getvalue())
    if not ok:
        raise StageError("onnxsim", f"simplified model fails onnxsim's numeric check "
                         f"(log: {log_path})")
    onnx.save(model, str(dst))


def pnnx_executable() -> str:
    found = shutil.which("pnnx")
    if found:
        return found
    import pnnx  # the pip package ships the binary

    candidate = Path(pnnx.__file__).parent / "pnnx"
    if candidate.exists():
        return str(candidate)
    raise StageError("pnnx", "the pnnx executable was not found (pip install pnnx)")


def run_pnnx(onnx_path: Path, workdir: Path, input_w: int, input_h: int, fp16: bool,
             log_path: Path) -> tuple[Path, Path]:
    """ONNX -> NCNN with pnnx; every by-product stays in `workdir`."""
    workdir = workdir.resolve()
    source = workdir / "input.onnx"  # pnnx writes a simplified copy beside its input
    shutil.copyfile(onnx_path, source)
    stem = workdir / "pnnx"
    param, weights = stem.with_suffix(".ncnn.param"), stem.with_suffix(".ncnn.bin")
    command = [pnnx_executable(), str(source), f"inputshape=[1,3,{input_h},{input_w}]",
               f"fp16={int(fp16)}", f"pnnxparam={stem}.pnnx.param", f"pnnxbin={stem}.pnnx.bin",
               f"pnnxpy={workdir / 'pnnx_model.py'}", f"pnnxonnx={stem}.pnnx.onnx",
               f"ncnnparam={param}", f"ncnnbin={weights}", f"ncnnpy={workdir / 'ncnn_model.py'}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=workdir, timeout=600,
                              check=False)
    except subprocess.TimeoutExpired:
        raise StageError("pnnx", f"pnnx did not finish in 10 minutes (log: {log_path})") from None
    log_path.write_text(f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    if done.returncode != 0 or not param.exists() or not weights.exists():
        raise StageError("pnnx", f"pnnx failed with exit code {done.returncode} "
                         f"(log: {log_path})")
    return param, weights


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
