"""NCNN (pip build, fp32) as a runner."""

from __future__ import annotations

from pathlib import Path

import ncnn
import numpy as np

from common.errors import InputError
from common.threads import configure_ncnn
from parity.ncnn_param import Layer, Param


class NcnnRunner:
    """A .param/.bin pair run in fp32; `param_text`, if given, is loaded instead of the
    file (a rewritten net), while errors still name `param`."""

    def __init__(self, param: Path, weights: Path, input_name: str, output_names: list[str],
                 name: str = "ncnn", threads: int = 1, param_text: str | None = None):
        self.name = name
        self.input_name = input_name
        self.output_names = list(output_names)
        self.net = ncnn.Net()
        configure_ncnn(self.net.opt, threads)
        self.net.opt.use_fp16_storage = False
        self.net.opt.use_fp16_packed = False
        self.net.opt.use_fp16_arithmetic = False
        loaded = self.net.load_param(str(param)) if param_text is None \
            else self.net.load_param_mem(param_text)
        if loaded != 0:
            raise InputError(param, "ncnn cannot load this param file")
        if self.net.load_model(str(weights)) != 0:
            raise InputError(weights, "ncnn cannot load these weights (too short for the param?)")
        known = {blob.name for blob in self.net.blobs()}
        for blob in [input_name, *self.output_names]:
            if blob not in known:
                raise InputError(param, f"has no blob named {blob!r}")

    def infer(self, feed: np.ndarray) -> dict[str, np.ndarray]:
        array = np.ascontiguousarray(feed[0], dtype=np.float32)
        # ncnn.Mat(array) borrows numpy's memory, and an in-place first layer would write
        # into it (seen to segfault); clone into ncnn's own memory.
        extractor = self.net.create_extractor()
        extractor.input(self.input_name, ncnn.Mat(array).clone())
        outputs = {}
        for blob in self.output_names:
            status, mat = extractor.extract(blob)
            if status != 0:
                raise InputError(blob, f"ncnn could not compute blob {blob!r}")
            outputs[blob] = np.array(mat, copy=True)
        return outputs


def param_blobs(param: Path) -> set[str]:
    """Every blob name the param file mentions (InputError naming it if unreadable)."""
    return Param.read(param).blob_names()


def net_layers(net: ncnn.Net) -> list[Layer]:
    """The layers of a loaded net in file order (type, name and blob names; no params)."""
    names = [blob.name for blob in net.blobs()]
    return [Layer(layer.type, layer.name, [names[i] for i in layer.bottoms],
                  [names[i] for i in layer.tops]) for layer in net.layers()]
