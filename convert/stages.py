"""The converter's stages that call other tools: ONNX export, onnxsim, pnnx.

Logs: nothing is written for a stage that succeeds. When onnxsim or pnnx
fails, its output is saved to one file in TMPDIR (`convert-onnxsim-*.log`,
`convert-pnnx-*.log`) and the error line names it; that file is the only thing
a conversion ever leaves outside its output.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from common.errors import StageError


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


# onnxsim's own check feeds random inputs; its defaults (atol 1e-5, rtol 1e-4) refuse fp32
# reordering noise of deep graphs (ConvNeXt: ~1e-3 on stride-32 logits). It is a smoke test:
# parity's onnx-sim stage judges the simplified model on real photos.
ONNXSIM_CHECK_ATOL = 1e-2
ONNXSIM_CHECK_RTOL = 1e-3


def simplify_onnx(src: Path, dst: Path, check_n: int = 3) -> None:
    """onnxsim with its numeric check (random inputs, onnxruntime) turned on."""
    import onnxsim

    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            model, ok = onnxsim.simplify(onnx.load(str(src)), check_n=check_n,
                                         check_atol=ONNXSIM_CHECK_ATOL,
                                         check_rtol=ONNXSIM_CHECK_RTOL)
    except Exception as exc:  # noqa: BLE001 - onnxsim raises many types
        raise StageError("onnxsim", f"simplification failed: {_one_line(exc)}"
                         + kept_log("onnxsim", log.getvalue() + f"\n{exc}\n")) from None
    if not ok:
        raise StageError("onnxsim", "simplified model fails onnxsim's numeric check"
                         + kept_log("onnxsim", log.getvalue()))
    onnx.save(model, str(dst))


def kept_log(stage: str, text: str) -> str:
    """Save a failed stage's output in TMPDIR; ' (log: PATH)' for the error line."""
    try:
        fd, name = tempfile.mkstemp(prefix=f"convert-{stage}-", suffix=".log")
        with open(fd, "w", encoding="utf-8", errors="replace") as file:
            file.write(text)
    except OSError:
        return " (no log: TMPDIR is not writable)"
    return f" (log: {name})"


def pnnx_executable() -> str:
    found = shutil.which("pnnx")
    if found:
        return found
    import pnnx  # the pip package ships the binary

    candidate = Path(pnnx.__file__).parent / "pnnx"
    if candidate.exists():
        return str(candidate)
    raise StageError("pnnx", "the pnnx executable was not found (pip install pnnx)")


def run_pnnx(onnx_path: Path, workdir: Path, input_w: int, input_h: int,
             fp16: bool) -> tuple[Path, Path]:
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
    except subprocess.TimeoutExpired as exc:
        raise StageError("pnnx", "pnnx did not finish in 10 minutes"
                         + kept_log("pnnx", _command_log(command, exc.stdout, exc.stderr))) \
            from None
    if done.returncode != 0 or not param.exists() or not weights.exists():
        raise StageError("pnnx", f"pnnx failed with exit code {done.returncode}"
                         + kept_log("pnnx", _command_log(command, done.stdout, done.stderr)))
    return param, weights


def _command_log(command: list[str], stdout: str | bytes | None,
                 stderr: str | bytes | None) -> str:
    def text(out: str | bytes | None) -> str:
        return out.decode(errors="replace") if isinstance(out, bytes) else out or ""

    return f"$ {' '.join(command)}\n{text(stdout)}\n{text(stderr)}"


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
