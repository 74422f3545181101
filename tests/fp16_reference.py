"""The reference the ncnn-fp16 stage is tested against: ncnn run one layer at a time.

Each layer's top blobs are extracted, rounded to fp16 in numpy and fed back by
name (``Extractor.input`` on an intermediate blob; ``feed_back`` says what is
fed), so the next layers consume what fp16 storage would hand them. Slow, and
only the tests need it.
"""

from __future__ import annotations

from pathlib import Path

import ncnn
import numpy as np

from common.errors import InputError
from parity.runners.ncnn_fp16 import fp16_round
from parity.runners.ncnn_runner import NcnnRunner, net_layers


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
