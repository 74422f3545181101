"""NCNN with fp16 storage emulated on a host whose pip ncnn computes in fp32 only.

ARM builds of ncnn default to ``opt.use_fp16_storage``: every blob between
layers is kept as IEEE half, while arithmetic stays fp32. The x86 pip wheel
ignores that option, so it is emulated twice over:

* ``Fp16CastNcnnRunner`` (the ``ncnn-fp16`` stage) adds a pair of ncnn Cast
  layers (fp32 -> fp16 -> fp32) after every layer and runs the net in one go;
* ``Fp16EmulatedNcnnRunner`` (the reference it is tested against) drives the
  net one layer at a time: it extracts each layer's top blobs, rounds them to
  fp16 in numpy and feeds the rounded copies back by name
  (``Extractor.input`` on an intermediate blob; ``feed_back`` says what is fed).

Both give the same bits; the next layers consume exactly what fp16 storage
would have handed them.

Not emulated: the fp16 copies of the weights that fp16 storage also makes on
ARM (only blobs are rounded here), and fp16 *arithmetic*.
"""

from __future__ import annotations

from pathlib import Path

import ncnn
import numpy as np
import torch

from common.errors import InputError
from parity.ncnn_param import Layer, Param
from parity.runners.ncnn_runner import NcnnRunner, net_layers

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


class Fp16EmulatedNcnnRunner:
    """ncnn run layer by layer, every intermediate blob rounded to fp16 (as fp16 storage does)."""

    def __init__(self, param: Path, weights: Path, input_name: str, output_names: list[str],
                 name: str = "ncnn-fp16", threads: int = 1):
        # The plain runner loads the net with fp32 options and checks the blob names.
        self._plain = NcnnRunner(param, weights, input_name, output_names, name=name,
                                 threads=threads)
        self.net = self._plain.net
        self.name = name
        self.input_name = input_name
        self.output_names = list(output_names)
        layers = net_layers(self.net)
        produced = {top for layer in layers if layer.type != "Input" for top in layer.tops}
        missing = [blob for blob in self.output_names if blob not in produced]
        if missing:
            raise InputError(param, f"no layer produces {missing!r}")
        # The blobs the outputs depend on, back to the input ...
        needed = set(self.output_names)
        for layer in reversed(layers):
            if layer.type != "Input" and needed.intersection(layer.tops):
                needed.update(b for b in layer.bottoms if b != input_name)
        needed.discard(input_name)
        # ... in file order: param files are topologically ordered, so each
        # blob's bottoms are computed (and rounded) before it is extracted.
        self.schedule: list[str] = [top for layer in layers if layer.type != "Input"
                                    for top in layer.tops if top in needed]

    def feed_back(self, blob: str, value: np.ndarray) -> np.ndarray:
        """What the layers after `blob` (or the input) read: `value` rounded to fp16.

        Returns a new C-contiguous float32 array of `value`'s shape, never `value`
        itself (which may be ncnn's memory).
        """
        return fp16_round(value)

    def infer(self, feed: np.ndarray) -> dict[str, np.ndarray]:
        """Run one 1x3xHxW tensor; outputs without the batch dim, as fed back."""
        array = self.feed_back(self.input_name,
                               np.ascontiguousarray(feed[0], dtype=np.float32))
        # ncnn.Mat(array) borrows numpy memory; `_owned` copies it into ncnn's own
        # memory at once, and every array wrapped is referenced in `keep` until
        # the extractor is gone anyway. The copy is needed: an in-place layer
        # (Sigmoid here) run on a borrowed, refcount-less Mat segfaults the wheel.
        keep: list[np.ndarray] = [array]
        outputs: dict[str, np.ndarray] = {}
        wanted = set(self.output_names)
        extractor = self.net.create_extractor()
        try:
            extractor.input(self.input_name, _owned(array))
            for blob in self.schedule:
                status, mat = extractor.extract(blob)
                if status != 0:
                    raise InputError(blob, f"ncnn could not compute blob {blob!r}")
                computed = np.asarray(mat)  # a view of ncnn's memory, elempack 1
                fed = np.ascontiguousarray(self.feed_back(blob, computed), dtype=np.float32)
                if fed.shape != computed.shape:
                    raise ValueError(f"fed back {fed.shape} for blob {blob!r} of shape "
                                     f"{computed.shape}")
                del computed, mat
                keep.append(fed)
                extractor.input(blob, _owned(fed))
                if blob in wanted:
                    outputs[blob] = fed
        finally:
            del extractor
        del keep
        return {blob: outputs[blob] for blob in self.output_names}


def _owned(array: np.ndarray) -> ncnn.Mat:
    """An ncnn-allocated (refcounted) copy of a C-contiguous float32 array."""
    return ncnn.Mat(array).clone()  # the temporary Mat borrows `array` only during clone


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

    Gives the same bits as `Fp16EmulatedNcnnRunner` (tests compare them) at about
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
