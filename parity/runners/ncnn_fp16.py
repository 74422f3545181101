"""NCNN with fp16 storage emulated on a host whose pip ncnn computes in fp32 only.

ARM builds of ncnn default to ``opt.use_fp16_storage``: every blob between
layers is kept as IEEE half, while arithmetic stays fp32. The x86 pip wheel
ignores that option, so it is emulated twice over:

* ``Fp16CastNcnnRunner`` (the ``ncnn-fp16`` stage) adds a pair of ncnn Cast
  layers (fp32 -> fp16 -> fp32) after every layer and runs the net in one go;
* the tests' reference (``tests/fp16_reference.py``) drives the net one
  layer at a time: it extracts each layer's top blobs, rounds them to fp16 in
  numpy and feeds the rounded copies back by name.

Both give the same bits; the next layers consume exactly what fp16 storage
would have handed them.

Not emulated: the fp16 copies of the weights that fp16 storage also makes on
ARM (only blobs are rounded here), and fp16 *arithmetic*.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.errors import InputError
from parity.ncnn_param import Layer, Param
from parity.runners.ncnn_runner import NcnnRunner

_CHUNK = 32768  # torch's grain size: smaller casts run on the calling thread only


def fp16_round(x: np.ndarray) -> np.ndarray:
    """Round to the nearest IEEE half (ties to even), as a new C-contiguous float32 array.

    Same bits as ``x.astype(np.float16).astype(np.float32)`` (subnormals kept,
    beyond +-65504 -> +-inf) but through torch's vectorised cast: numpy's made
    this runner ~9x slower than fp32 ncnn. Cast in chunks below torch's
    parallel grain size: torch's worker threads, spinning next to ncnn's,
    made inferences stall for up to seconds on a busy 2-core machine.
    """
    array = np.ascontiguousarray(x, dtype=np.float32)
    if not array.flags.writeable:  # torch.from_numpy warns on read-only memory
        array = array.copy()
    source = torch.from_numpy(array).reshape(-1)
    half = torch.empty(source.numel(), dtype=torch.float16)
    result = torch.empty_like(source)
    for start in range(0, source.numel(), _CHUNK):
        chunk = slice(start, start + _CHUNK)
        half[chunk].copy_(source[chunk])
        result[chunk].copy_(half[chunk])
    return result.numpy().reshape(array.shape)


# Layers that only move or select values: fed fp16 values, they output fp16 values,
# so rounding their tops again changes no bit and their Cast pairs are left out.
_VALUE_PRESERVING = {"Split", "Concat", "Slice", "Crop", "Reshape", "Permute", "Flatten",
                     "ShuffleChannel", "Squeeze", "ExpandDims"}


def _preserves_values(layer: Layer) -> bool:
    if layer.type == "Pooling":  # max pooling (0=0, ncnn's default) picks an input value
        return layer.get(0) in (None, "0")
    return layer.type in _VALUE_PRESERVING


def with_fp16_casts(param: Param, keep: set[str]) -> Param:
    """The same net with every intermediate blob cast to fp16 and back by Cast layers.

    Blobs in `keep` (the outputs) stay as computed, the runner rounds them itself;
    layers reading them get the rounded copy. Tops of value-preserving layers need
    no casts: all their inputs are rounded already.
    """
    layers: list[Layer] = []
    renamed: dict[str, str] = {}
    for layer in param.layers:
        layers.append(Layer(layer.type, layer.name, [renamed.get(b, b) for b in layer.bottoms],
                            list(layer.tops), list(layer.params)))
        if layer.type == "Input" or _preserves_values(layer):
            continue
        for top in layer.tops:
            half, rounded = f"{top}__fp16", f"{top}__rounded"
            layers += [Layer.build("Cast", f"{top}__to_fp16", [top], [half], ["0=1", "1=2"]),
                       Layer.build("Cast", f"{top}__to_fp32", [half], [rounded], ["0=2", "1=1"])]
            renamed[top] = rounded
    return Param(layers)


class Fp16CastNcnnRunner:
    """fp16 storage emulated inside ncnn: Cast layers round every intermediate blob.

    Gives the same bits as the layer-by-layer reference in tests/fp16_reference.py at about
    a third of its cost, since the net runs in one extraction.
    """

    def __init__(self, param: Path, weights: Path, input_name: str, output_names: list[str],
                 name: str = "ncnn-fp16", threads: int = 1):
        self.name = name
        self.output_names = list(output_names)
        original = Param.read(Path(param))
        rewritten = with_fp16_casts(original, set(self.output_names)).text()
        self._runner = NcnnRunner(param, weights, input_name, self.output_names, name, threads,
                                  param_text=rewritten)
        known = original.blob_names()  # the rewritten net has Cast blobs besides
        for blob in [input_name, *self.output_names]:
            if blob not in known:
                raise InputError(param, f"has no blob named {blob!r}")

    def infer(self, feed: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self._runner.infer(fp16_round(feed))
        return {blob: fp16_round(value) for blob, value in outputs.items()}
